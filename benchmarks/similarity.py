"""Similarity on real recordings: are a track's nearest neighbours from the same soundtrack?

    python benchmarks/similarity.py --ckpt best.ckpt --audio /work/audio --work /tmp/sim \\
        [--per-soundtrack 20] [--clip 30] [-n 5] [--map docs/map.html]

Each folder under ``--audio`` is one soundtrack (a Debian music package unpacked with
``dpkg-deb -x``: wesnoth-1.16-music, warzone2100-music, drascula-music, hyperrogue-music ...).
Its recordings of at least ``--clip`` + 10 s (sound effects left out) give up to
``--per-soundtrack`` tracks, evenly chosen; each track is a ``--clip`` s excerpt from its middle,
written once as FLAC under ``--work`` (the audio is never committed). ``genretag tag --embeddings``
scores the excerpts; then for each track its ``-n`` nearest other tracks by cosine similarity,
and the share of them from the same soundtrack, for:

* ``embeddings``: the model's pooled trunk features (what ``genretag similar`` uses);
* ``genre_scores``: the model's genre probabilities as the vector;
* ``mfcc``: the obvious model-free alternative, 20 MFCC means and standard deviations per track
  (librosa, standardised over the corpus);
* ``chance``: the share a random choice of neighbours would give (class sizes).

Prints one JSON object, then a one-line summary. ``--map`` also writes the report (with its map)
of the tagged excerpts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from genretag.data import audio

AUDIO = {".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3"}
RATE = 22_050


def recordings(root: Path, clip: float, per: int) -> dict[str, list[Path]]:
    """{soundtrack: recordings} (long enough, no sound effects, evenly chosen)."""
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")):
        tracks = []
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in AUDIO or "sounds" in path.parts:
                continue
            try:
                seconds = audio.info(path).duration
            except Exception:  # not decodable: not a recording here
                continue
            if seconds >= clip + 10:
                tracks.append(path)
        if len(tracks) >= 2:
            pick = np.linspace(0, len(tracks) - 1, min(per, len(tracks))).round().astype(int)
            found[folder.name] = [tracks[i] for i in sorted(set(pick))]
    return found


def excerpts(found: dict[str, list[Path]], work: Path, clip: float) -> dict[Path, str]:
    """{excerpt file: soundtrack}, each written once (mono FLAC at 22.05 kHz)."""
    out = {}
    for name, tracks in found.items():
        for k, track in enumerate(tracks):
            target = work / "clips" / name / f"{k:02d}.flac"
            if not target.exists():
                x = audio.decode(track, sr=RATE)
                start = max(0, len(x) // 2 - round(clip * RATE / 2))
                target.parent.mkdir(parents=True, exist_ok=True)
                temp = target.with_name(f".{target.name}.tmp.flac")
                sf.write(temp, x[start : start + round(clip * RATE)], RATE)
                os.replace(temp, target)
            out[target] = name
    return out


def mfcc(path: Path) -> np.ndarray:
    import librosa

    x = audio.decode(path, sr=RATE)
    m = librosa.feature.mfcc(y=x, sr=RATE, n_mfcc=20)
    return np.concatenate([m.mean(1), m.std(1)])


def same_share(vectors: np.ndarray, classes: np.ndarray, n: int) -> float:
    """Mean share of each row's ``n`` nearest other rows (cosine) with its class."""
    from genretag.commands.similar import neighbours

    index, _ = neighbours(vectors, n)
    return float((classes[index] == classes[:, None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, action="append")
    parser.add_argument("--audio", type=Path, default=Path("/work/audio"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/genretag-similarity"))
    parser.add_argument("--per-soundtrack", type=int, default=20)
    parser.add_argument("--clip", type=float, default=30.0)
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("--map", type=Path, help="also write the report with its map here")
    args = parser.parse_args()
    found = recordings(args.audio, args.clip, args.per_soundtrack)
    excerpts(found, args.work, args.clip)
    out = args.work / "tags.csv"
    for stale in args.work.glob("tags*"):
        stale.unlink()
    from genretag.report import read_table, write_report
    from genretag.tagger.command import main as tag
    from genretag.tagger.embeddings import read_embeddings

    ckpts = [a for c in args.ckpt for a in ("--ckpt", c)]
    load, start = os.getloadavg()[0], time.monotonic()
    code = tag([str(args.work / "clips"), *ckpts, "--out", str(out), "--embeddings", "--quiet"])
    seconds = time.monotonic() - start
    files, scores = read_table(out)
    emb = read_embeddings(out, len(files))
    classes = np.array([Path(p).parent.name for p in files["path"]])
    per_class = {c: int((classes == c).sum()) for c in sorted(set(classes))}
    chance = float(np.mean([(per_class[c] - 1) / (len(classes) - 1) for c in classes]))
    feats = np.stack([mfcc(Path(p)) for p in files["path"]])
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    result = {
        "benchmark": "similarity",
        "ckpt": args.ckpt,
        "n": args.n,
        "tracks": len(files),
        "per_soundtrack": per_class,
        "clip_s": args.clip,
        f"same_soundtrack_at_{args.n}": {
            "embeddings": round(same_share(emb, classes, args.n), 3),
            "genre_scores": round(same_share(scores.to_numpy(), classes, args.n), 3),
            "mfcc": round(same_share(feats, classes, args.n), 3),
            "chance": round(chance, 3),
        },
        "tag_exit_code": code,
        "tag_seconds": round(seconds, 1),
        "loadavg_before": load,
        "loadavg_after": os.getloadavg()[0],
        "embedding_width": int(emb.shape[1]),
    }
    if args.map:
        write_report(out, args.map, threshold=0.5, max_timelines=0)
        result["map"] = str(args.map)
    print(json.dumps(result, indent=1))
    shares = result[f"same_soundtrack_at_{args.n}"]
    print(
        f"# same soundtrack among {args.n} nearest: "
        + ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
    )


if __name__ == "__main__":
    main()
