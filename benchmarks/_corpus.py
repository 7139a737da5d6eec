"""Synthetic audio in FMA's format for the benchmarks: MP3s with ID3 tags and cover art.

FMA's clips are 30 s, 44.1 kHz stereo, 320 kbit/s constant bit rate (a few 48 kHz or mono),
with an ID3v2 tag that often carries an attached picture. :func:`write_fma_mp3` writes one such
file (libsndfile's LAME, then mutagen for the tag); :func:`make_corpus` writes a small corpus in
FMA's layout (``tracks.csv`` with the real header, ``AAA/AAAAAA.mp3``) for end-to-end runs.

Imported by the scripts in this folder (``python benchmarks/decode.py`` puts it on the path).
"""

from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from mutagen.id3 import APIC, ID3, TALB, TCON, TIT2, TPE1

from genretag.data import fma

# (genres, genres_all, genre_top) of the synthetic tracks: Rock, Electronic, Hip-Hop, Punk+Techno.
GENRE_SETS = [
    ("[12]", "[12]", "Rock"),
    ("[15]", "[15]", "Electronic"),
    ("[21]", "[21]", "Hip-Hop"),
    ("[25, 181]", "[25, 12, 181, 15]", ""),
]


def music(seconds: float, sr: int, channels: int, seed: int = 0) -> np.ndarray:
    """Tones, chords and noise bursts (onsets): (T, channels) float32, peak about 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    x = sum(0.12 * np.sin(2 * np.pi * root * r * t) for r in (1, 1.25, 1.5, 2.0))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    x = x + 0.1 * rng.standard_normal(len(t)) * (np.mod(t, 0.5) < 0.04)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_fma_mp3(
    path: Path,
    seconds: float = 30.0,
    sr: int = 44_100,
    channels: int = 2,
    seed: int = 0,
    picture_kb: int = 60,
) -> Path:
    """An MP3 like FMA's: 320 kbit/s CBR, ID3v2 tag with title/artist/album/genre and a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path,
        music(seconds, sr, channels, seed),
        sr,
        format="MP3",
        bitrate_mode="CONSTANT",
        compression_level=0.0,  # 320 kbit/s at constant bit rate
    )
    tag = ID3()
    tag.add(TIT2(encoding=3, text=f'Track {seed}, "live"'))
    tag.add(TPE1(encoding=3, text="Synthetic Artist"))
    tag.add(TALB(encoding=3, text="Benchmarks"))
    tag.add(TCON(encoding=3, text="Rock"))
    if picture_kb > 0:
        jpeg = b"\xff\xd8\xff\xe0" + np.random.default_rng(seed).bytes(picture_kb * 1024)
        tag.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="Cover", data=jpeg))
    tag.save(path, v2_version=3)
    return path


def _write_one(args: tuple[Path, float, int, int, int]) -> Path:
    path, seconds, sr, channels, seed = args
    return write_fma_mp3(path, seconds, sr, channels, seed)


def make_corpus(
    root: Path,
    per_genre: dict[str, int],
    seconds: float = 30.0,
    processes: int = 1,
    unique: int | None = None,
) -> tuple[Path, Path]:
    """An FMA-layout corpus under ``root``: returns (meta_dir, audio_dir).

    ``per_genre`` gives, per split (training/validation/test), the tracks of each of the 4
    genre sets. Every 10th track is 48 kHz and every 7th mono, as a few of FMA's are. With
    ``unique``, only that many MP3s are encoded and the other tracks are symbolic links to them
    (decoding costs the same; encoding a large corpus would take longer than the benchmark).
    """
    meta, audio = root / "fma_metadata", root / "fma_small"
    meta.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("genretag.data") / "fma_genres.csv") as genres:
        shutil.copy(genres, meta / "genres.csv")
    rows, jobs, track_id = [], [], 2
    for split, count in per_genre.items():
        for genres, genres_all, top in GENRE_SETS:
            for _ in range(count):
                rows.append((track_id, split, "small", top, genres, genres_all, f"Song {track_id}"))
                sr = 48_000 if len(jobs) % 10 == 9 else 44_100
                channels = 1 if len(jobs) % 7 == 6 else 2
                jobs.append((audio / fma.audio_relpath(track_id), seconds, sr, channels, track_id))
                track_id += 997  # sparse ids across several AAA folders
    encoded = jobs if unique is None else jobs[:unique]
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_write_one, encoded))
    else:
        for job in encoded:
            _write_one(job)
    for i, job in enumerate(jobs[len(encoded) :]):
        job[0].parent.mkdir(parents=True, exist_ok=True)
        job[0].symlink_to(encoded[i % len(encoded)][0])
    columns = [("set", "split"), ("set", "subset"), ("track", "genre_top"),
               ("track", "genres"), ("track", "genres_all"), ("track", "title")]  # fmt: skip
    frame = pd.DataFrame(
        [r[1:] for r in rows],
        index=[r[0] for r in rows],
        columns=pd.MultiIndex.from_tuples(columns),
    )
    frame[("track", "duration")] = round(seconds)
    fma.write_tracks_csv(meta / "tracks.csv", frame)
    return meta, audio
