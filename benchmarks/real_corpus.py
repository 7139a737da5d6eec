"""A small real corpus in FMA's layout: 30 s clips of recordings, one class per soundtrack.

    python benchmarks/real_corpus.py --out data/soundtracks \\
        --class wesnoth=/tmp/st/wesnoth/usr/share/games/wesnoth/1.16/data/core/music/*.ogg \\
        --class rock='/tmp/st/fretsonfire-*/usr/share/games/fretsonfire/data/songs/*/*/' ...

Each ``--class NAME=GLOB`` is one class. A file the glob matches is one recording; a folder it
matches is one recording made of the stems inside it, mixed (Frets on Fire keeps a song as
``song.ogg`` plus ``guitar.ogg``). ``--skip PATTERN`` leaves out files of that name: a second
version of a recording (``frantic-old.ogg``, ``track3_enhanced.opus``) would otherwise put the
same music in two splits. Recordings shorter than a clip are left out. Each recording
gives up to ``--per-recording`` non-overlapping 30 s clips, spread evenly over it after its first
5%, written as FMA writes its clips: 44.1 kHz stereo MP3 at 320 kbit/s, ``AAA/AAAAAA.mp3``.

The split is **by recording**, seeded, within each class: whole recordings go to test until it
holds ``--held-out`` of the class's clips, then to validation likewise, the rest to training.
No recording has clips in two splits, so a model cannot score by recognising a recording.

``tracks.csv`` has FMA's 52 columns and 3-row header, ``set/subset`` small, and each class as
one FMA root genre (``genre_top``, ``genres``, ``genres_all``), chosen with ``NAME:GENRE`` or
else the class name when it is a root genre title, else the next unused root. The artist is the
class, the title the recording and clip start. So the corpus trains with
``--data.meta_dir OUT/fma_metadata --data.audio_dir OUT/fma_real --data.subset small`` and
everything (fit, test, baseline, compare, tag) runs as on FMA. Prints one JSON object (classes,
genres, recordings and clips per split), then a one-line summary.

The comparison in the README used six Debian game-music packages (``apt-get download
wesnoth-1.16-music warzone2100-music drascula-music colobot-common-sounds hyperrogue-music
fretsonfire-songs-sectoid fretsonfire-songs-muldjord``, each unpacked with ``dpkg-deb -x``); the
exact globs are in the README. Never commit the audio.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

from genretag.data import fma

AUDIO = {".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3"}
SR, CLIP_S = 44_100, 30.0
AUDIO_DIR = "fma_real"


def stems(path: Path) -> list[Path]:
    """A recording's files: the file itself, or the audio files of its folder."""
    return (
        sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO) if path.is_dir() else [path]
    )


def read_recording(path: Path) -> np.ndarray:
    """(samples, 2) float32 at 44.1 kHz: a file, or the stems of a folder mixed."""
    mix = None
    for stem in stems(path):
        audio, sr = sf.read(stem, dtype="float32", always_2d=True)
        audio = np.repeat(audio, 2, axis=1) if audio.shape[1] == 1 else audio[:, :2]
        if sr != SR:
            audio = soxr.resample(audio, sr, SR, quality="HQ")
        if mix is None:
            mix = audio
        else:
            n = min(len(mix), len(audio))
            mix = mix[:n] + audio[:n]
    if mix is None:
        raise SystemExit(f"{path}: a matched folder with no audio files in it")
    peak = float(np.abs(mix).max(initial=0.0))
    return mix / peak * 0.98 if peak > 0.98 else mix  # mixed stems may clip


def clip_starts(seconds: float, most: int) -> list[float]:
    """Up to ``most`` non-overlapping 30 s clip starts, evenly over [5%, end]."""
    lead = 0.05 * seconds
    room = seconds - lead
    count = min(most, int(room // CLIP_S))
    if count <= 0:
        return []
    return [lead + x for x in np.linspace(0.0, room - CLIP_S, count)]


def split_recordings(clips: dict[str, int], held_out: float, rng: np.random.Generator) -> dict:
    """{recording: split}: whole recordings to test, then validation, each up to ``held_out`` of
    the clips (at least one recording each when there are three or more), the rest training."""
    order = list(clips)
    rng.shuffle(order)
    total, splits, i = sum(clips.values()), {}, 0
    for split in ("test", "validation"):
        taken = 0
        while i < len(order) - 1 and (taken == 0 or taken + clips[order[i]] <= held_out * total):
            splits[order[i]] = split
            taken += clips[order[i]]
            i += 1
    for name in order[i:]:
        splits[name] = "training"
    return splits


def parse_classes(
    specs: list[str], roots: pd.DataFrame, skip: list[str]
) -> list[tuple[str, int, list[Path]]]:
    """[(class, genre id, recordings)] from ``NAME[:GENRE]=GLOB`` arguments, leaving out the
    names that match a ``skip`` pattern."""
    by_title = {t.lower(): int(g) for g, t in roots["title"].items()}
    classes, used = [], set()
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        if not sep:
            raise SystemExit(f"--class {spec!r}: expected NAME=GLOB or NAME:GENRE=GLOB")
        name, _, genre = name.partition(":")
        matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        recordings = [
            p
            for p in matched
            if (p.is_dir() or p.suffix.lower() in AUDIO)
            and not any(fnmatch.fnmatch(p.name, s) for s in skip)
        ]
        if not recordings:
            raise SystemExit(f"--class {name}: {pattern!r} matches no audio file or folder")
        key = (genre or name).lower()
        if genre and key not in by_title:
            raise SystemExit(f"--class {spec!r}: {genre!r} is not an FMA root genre")
        gid = by_title.get(key) or next(g for g in roots.index if int(g) not in used)
        if gid in used:
            raise SystemExit(f"--class {name}: genre {gid} is already another class's")
        used.add(int(gid))
        classes.append((name, int(gid), recordings))
    return classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="corpus root (created)")
    parser.add_argument("--class", dest="classes", action="append", required=True,
                        metavar="NAME[:GENRE]=GLOB", help="one class: its recordings (repeat)")  # fmt: skip
    parser.add_argument("--skip", action="append", default=[], metavar="PATTERN",
                        help="leave out files named so: another version of a recording (repeat)")  # fmt: skip
    parser.add_argument("--per-recording", type=int, default=4, help="most clips per recording")
    parser.add_argument("--held-out", type=float, default=0.18, help="test (and val) share")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with resources.as_file(resources.files("genretag.data") / "fma_genres.csv") as path:
        genres = pd.read_csv(path, index_col=0)
    classes = parse_classes(args.classes, genres[genres["parent"] == 0], args.skip)
    meta, audio_dir = args.out / "fma_metadata", args.out / AUDIO_DIR
    if meta.exists() or audio_dir.exists():
        raise SystemExit(f"{args.out} already holds a corpus: remove it or choose another --out")
    rng = np.random.default_rng(args.seed)

    rows, jobs, summary = [], [], {}
    for name, gid, recordings in classes:
        plans = {}
        for rec in recordings:
            seconds = min((sf.info(p).duration for p in stems(rec)), default=0.0)
            if starts := clip_starts(seconds, args.per_recording):
                plans[rec] = starts
        splits = split_recordings({r: len(s) for r, s in plans.items()}, args.held_out, rng)
        counts = {s: [0, 0] for s in ("training", "validation", "test")}
        for rec, starts in plans.items():
            counts[splits[rec]][0] += 1
            for start in starts:
                track_id = len(rows) + 2
                title = f"{rec.name} @ {int(start // 60)}:{int(start % 60):02d}"
                rows.append((track_id, splits[rec], "small", genres.at[gid, "title"],
                             f"[{gid}]", f"[{gid}]", title, name, rec.parent.name))  # fmt: skip
                jobs.append((rec, start, audio_dir / fma.audio_relpath(track_id)))
                counts[splits[rec]][1] += 1
        summary[name] = {"genre": genres.at[gid, "title"], "genre_id": gid}
        summary[name] |= {s: {"recordings": r, "clips": c} for s, (r, c) in counts.items()}

    by_recording: dict[Path, list] = {}
    for job in jobs:
        by_recording.setdefault(job[0], []).append(job)

    def encode_recording(group: list) -> None:
        audio = read_recording(group[0][0])  # decode each recording once
        for _, start, path in group:
            clip = audio[round(start * SR) : round((start + CLIP_S) * SR)]
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, clip, SR, format="MP3", bitrate_mode="CONSTANT", compression_level=0.0)

    meta.mkdir(parents=True)
    try:
        with ThreadPoolExecutor(2) as pool:  # libsndfile and soxr release the GIL
            list(pool.map(encode_recording, by_recording.values()))
    except BaseException:
        shutil.rmtree(meta, ignore_errors=True)
        shutil.rmtree(audio_dir, ignore_errors=True)
        raise
    with resources.as_file(resources.files("genretag.data") / "fma_genres.csv") as path:
        shutil.copy(path, meta / "genres.csv")
    columns = [("set", "split"), ("set", "subset"), ("track", "genre_top"), ("track", "genres"),
               ("track", "genres_all"), ("track", "title"), ("artist", "name"), ("album", "title")]  # fmt: skip
    frame = pd.DataFrame(
        [r[1:] for r in rows],
        index=[r[0] for r in rows],
        columns=pd.MultiIndex.from_tuples(columns),
    )
    frame[("track", "duration")] = round(CLIP_S)
    fma.write_tracks_csv(meta / "tracks.csv", frame)  # last: its presence means "complete"
    totals = {
        s: sum(c[s]["clips"] for c in summary.values()) for s in ("training", "validation", "test")
    }
    result = {"benchmark": "real_corpus", "out": str(args.out), "classes": summary}
    print(json.dumps(result | {"clips": totals, "seed": args.seed}))
    print(f"# {len(classes)} classes, clips per split {totals}, no recording in two splits")


if __name__ == "__main__":
    main()
