"""The embedded demo corpus: a small synthetic FMA in FMA's exact layout.

:func:`ensure_demo` writes, once per folder::

    root/fma_metadata/tracks.csv   FMA's 3-row header, all 52 real columns, real value formats
    root/fma_metadata/genres.csv   the real genres.csv (package data)
    root/fma_demo/AAA/AAAAAA.mp3   10 s, 44.1 kHz stereo MP3; folder = track_id // 1000

so the demo runs the same reading, labelling and decoding code as real FMA.

Eight FMA root genres, each with two of its real sub-genres, have a signature of their own:
tempo and drum pattern (synthesized kick, snare, hi-hat, ride), harmony (power chords, triads,
7th chords, clusters), timbre (distorted saws, Karplus-Strong plucks, FM pianos and bells,
bowed strings, pads, formant voices, noise). Key, tempo, groove, mix and level vary per track;
a sub-genre changes a few traits of its root. One track in six has two roots: its audio mixes
both styles and, as in FMA, its genre_top is empty and it is in the ``large`` subset only.

Size: 144 tracks of 10 s (FMA's clips last 30 s): training crops are at most 10 s. MP3 encoding
(libsndfile's LAME, ~0.2 s of CPU per 10 s stereo clip) is ~85% of the synthesis time, so the
corpus size sets it, not numpy: about 35-45 s of CPU, i.e. about 20 s on two idle cores.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from genretag.data import fma
from genretag.io import exclusive
from genretag.synth.music import ROOTS, SR, STYLES, render
from genretag.system import available_cores

logger = logging.getLogger(__name__)

META_DIR, AUDIO_DIR = "fma_metadata", "fma_demo"
SINGLE_PER_ROOT = 15  # one-root tracks per root (plan() holds out positions 4, 8, 10 or 14)
PER_PAIR = 3  # two-root tracks per neighbouring pair of roots in ROOTS (8 pairs)

COLUMNS = fma.TRACKS_CSV_COLUMNS  # FMA's tracks.csv columns in the real order

# ---------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class DemoTrack:
    """A planned track: the genre ids its "artist" gave (one per root) and where it goes."""

    track_id: int
    genres: tuple[int, ...]
    split: str
    subset: str
    album: int
    number: int  # in the album, from 1


def _taxonomy() -> pd.DataFrame:
    """The real genres.csv (package data), indexed by genre_id."""
    with resources.files("genretag.data").joinpath("fma_genres.csv").open("rb") as handle:
        return pd.read_csv(handle, index_col=0)


def plan(seed: int = 0) -> list[DemoTrack]:
    """The corpus: 15 one-root tracks per root, 3 two-root tracks per neighbouring root pair.

    Splits are 78/11/11 within every genre group, and validation and test hold tracks of both
    sub-genres. One-root tracks are ``small`` or ``medium``; two-root tracks ``large`` (FMA
    fills genre_top in small and medium). Tracks of an album share genres and split (FMA's
    split is artist-filtered). Ids increase sparsely from 2 over about 40 folders, like FMA's.
    """
    rng, taxonomy = np.random.default_rng([seed, 2]), _taxonomy()
    opts = {
        r: (r, *[g for g in STYLES if g != r and taxonomy.at[g, "top_level"] == r]) for r in ROOTS
    }
    groups = []  # per genre group: (genres, split, subset) of each track
    for r, root in enumerate(ROOTS):  # i % 3: 0 root, 1 and 2 its sub-genres
        held = {4: "validation", 8: "test", 14 - 4 * (r % 2): ("validation", "test")[r % 2]}
        subset = ["medium" if i % 5 == 2 else "small" for i in range(SINGLE_PER_ROOT)]
        groups.append([((opts[root][i % 3],), held.get(i, "training"), subset[i])
                       for i in range(SINGLE_PER_ROOT)])  # fmt: skip
    for p, (a, b) in enumerate(zip(ROOTS, ROOTS[1:] + ROOTS[:1], strict=True)):
        held = {2: ("validation", "test")[p % 2]}
        groups.append([(tuple(sorted((opts[a][i % 3], opts[b][(i + p) % 3]))),
                        held.get(i, "training"), "large") for i in range(PER_PAIR)])  # fmt: skip
    albums = []
    for group in groups:
        for split in ("training", "validation", "test"):
            members = [m for m in group if m[1] == split]
            while members:
                size = int(rng.integers(1, 5))
                albums.append(members[:size])
                members = members[size:]
    tracks, track_id = [], 2
    for album, a in enumerate(rng.permutation(len(albums))):
        for number, (genres, split, subset) in enumerate(albums[a], 1):
            tracks.append(DemoTrack(track_id, genres, split, subset, album, number))
            track_id += int(rng.integers(1, 4))
        track_id += int(rng.integers(20, 900))
    return tracks


_WORDS = (
    "Electric River Quiet Machine Broken Garden Golden Signal Midnight Ghost Paper Avenue "
    "Velvet Harbor Hollow Lantern Northern Engine Static Orchard Little Satellite Wild Tide"
).split()
LICENSES = (
    "Attribution-NonCommercial-ShareAlike 3.0 International",
    "Attribution-NonCommercial-NoDerivatives (aka Music Sharing) 3.0 International",
    "Attribution 3.0 International",
)


def _stamp(when: datetime, midnight: bool = False) -> str:
    """FMA's date format: ``2008-11-26 01:44:45``."""
    return f"{when:%Y-%m-%d 00:00:00}" if midnight else f"{when:%Y-%m-%d %H:%M:%S}"


def _album_columns(k: int, size: int, rng: np.random.Generator) -> dict[tuple[str, str], object]:
    """Album and artist columns, shared by the tracks of album ``k`` (one artist per album)."""
    a, b = (str(w) for w in rng.choice(_WORDS, 2))
    created = datetime(2008, 11, 26) + timedelta(seconds=int(rng.integers(0, 3000 * 86400)))
    place = rng.random() < 0.5
    # free text as FMA has it: commas, quotes, newlines, HTML
    name = f'{a}, {b} & "The {b}s"' if k % 7 == 2 else f"{a}\n{b}" if k % 11 == 5 else f"{a} {b}"
    return {
        ("album", "comments"): int(rng.integers(0, 3)),
        ("album", "date_created"): _stamp(created),
        ("album", "date_released"): _stamp(
            created + timedelta(days=int(rng.integers(0, 60))), True
        ),
        ("album", "favorites"): int(rng.integers(0, 12)),
        ("album", "id"): 1 + 3 * k,
        ("album", "information"): f"<p>{a} {b}, recorded at home.</p>" if k % 3 else None,
        ("album", "listens"): int(rng.integers(100, 60000)),
        ("album", "tags"): "[]",
        ("album", "title"): f"{b} {a}",
        ("album", "tracks"): size,
        ("album", "type"): "Album" if size > 1 else "Single Tracks",
        ("artist", "active_year_begin"): f"{2000 + k % 10}-01-01 00:00:00" if k % 2 else None,
        ("artist", "active_year_end"): "2011-01-01 00:00:00" if k % 6 == 3 else None,
        ("artist", "associated_labels"): f"{a} Records, {b} Tapes" if k % 5 == 1 else None,
        ("artist", "bio"): f'<p>{a} "{b}" makes music.</p>\n<p>Since {2000 + k % 10}.</p>',
        ("artist", "comments"): int(rng.integers(0, 4)),
        ("artist", "date_created"): _stamp(created - timedelta(minutes=3)),
        ("artist", "favorites"): int(rng.integers(0, 80)),
        ("artist", "id"): 1 + 2 * k,
        ("artist", "latitude"): round(float(rng.uniform(-40, 60)), 7) if place else None,
        ("artist", "location"): f"{a} City" if place else None,
        ("artist", "longitude"): round(float(rng.uniform(-120, 140)), 7) if place else None,
        ("artist", "members"): f"{a} {b}, {b} {a}\n" if k % 4 == 0 else None,
        ("artist", "name"): name,
        ("artist", "related_projects"): f"{b} {a} Band, The {a}s" if k % 9 == 4 else None,
        ("artist", "tags"): f"['{a.lower()}']",
        ("artist", "website"): f"http://{a.lower()}{b.lower()}.example.com" if k % 2 else None,
    }


def _track_columns(
    i: int, track: DemoTrack, taxonomy: pd.DataFrame, created: datetime, rng: np.random.Generator
) -> dict[tuple[str, str], object]:
    """Set and track columns of the ``i``-th track."""
    lineage = set()
    for genre in track.genres:  # genres_all = genres + every ancestor
        while genre:
            lineage.add(genre)
            genre = int(taxonomy.at[genre, "parent"])
    roots = {int(taxonomy.at[g, "top_level"]) for g in track.genres}
    a, b = (str(w) for w in rng.choice(_WORDS, 2))
    title = f'{a}, "{b}" (Remix)' if i % 11 == 3 else f"{a}\n{b}" if i % 17 == 5 else f"{a} {b}"
    return {
        ("set", "split"): track.split,
        ("set", "subset"): track.subset,
        ("track", "bit_rate"): int(rng.choice([320000, 256000, 192000])),
        ("track", "comments"): int(rng.integers(0, 2)),
        ("track", "composer"): f"{b} {a}" if i % 8 == 1 else None,
        ("track", "date_created"): _stamp(created + timedelta(minutes=2 * track.number)),
        ("track", "date_recorded"): _stamp(created, True) if i % 3 else None,
        ("track", "duration"): int(rng.integers(95, 420)),  # the full track's, as in FMA
        ("track", "favorites"): int(rng.integers(0, 20)),
        ("track", "genre_top"): taxonomy.at[roots.pop(), "title"] if len(roots) == 1 else None,
        ("track", "genres"): str(list(track.genres)),
        ("track", "genres_all"): str(sorted(lineage)),
        ("track", "interest"): int(rng.integers(200, 9000)),
        ("track", "language_code"): "en" if i % 4 else None,
        ("track", "license"): LICENSES[i % len(LICENSES)],
        ("track", "listens"): int(rng.integers(50, 5000)),
        ("track", "number"): track.number,
        ("track", "tags"): "[]",
        ("track", "title"): f"Café {a} – {b}" if i % 19 == 2 else title,
    }


def tracks_table(tracks: list[DemoTrack], seed: int = 0) -> pd.DataFrame:
    """tracks.csv as pandas reads FMA's: columns COLUMNS (MultiIndex), index ``track_id``.

    Columns FMA leaves (almost) empty, such as engineer, producer and lyricist, stay empty.
    """
    taxonomy, rng = _taxonomy(), np.random.default_rng([seed, 1])
    sizes = pd.Series([t.album for t in tracks]).value_counts()
    albums = {k: _album_columns(k, int(sizes[k]), rng) for k in sorted(sizes.index)}
    rows = []
    for i, track in enumerate(tracks):
        album = albums[track.album]
        created = datetime.fromisoformat(album[("album", "date_created")])
        row = {**album, **_track_columns(i, track, taxonomy, created, rng)}
        rows.append([row.get(column) for column in COLUMNS])
    index = pd.Index([t.track_id for t in tracks], name="track_id")
    return pd.DataFrame(rows, index=index, columns=pd.MultiIndex.from_tuples(COLUMNS))


# ---------------------------------------------------------------------------- the corpus


def _mp3_path(audio_dir: Path, track_id: int) -> Path:
    """FMA's layout: ``audio_dir/AAA/AAAAAA.mp3`` with AAA = track_id // 1000."""
    return audio_dir / fma.audio_relpath(track_id)


def _write_mp3(audio_dir: Path, seed: int, track: DemoTrack) -> None:
    audio = render(track.genres, np.random.default_rng([seed, 0, track.track_id]))
    sf.write(_mp3_path(audio_dir, track.track_id), audio, SR, format="MP3")


def _synthesize(root: Path, seed: int) -> None:
    """Write the corpus into a temporary folder in ``root``, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", suffix=".tmp", dir=root))
    try:
        tracks = plan(seed)
        logger.info("synthesizing the demo corpus in %s (%d tracks)", root, len(tracks))
        start = time.perf_counter()
        (tmp / META_DIR).mkdir()
        genres_csv = resources.files("genretag.data").joinpath("fma_genres.csv").read_bytes()
        (tmp / META_DIR / "genres.csv").write_bytes(genres_csv)
        tracks_table(tracks, seed).to_csv(tmp / META_DIR / "tracks.csv", lineterminator="\n")
        for folder in {_mp3_path(tmp / AUDIO_DIR, t.track_id).parent for t in tracks}:
            folder.mkdir(parents=True)
        with ThreadPoolExecutor(
            min(8, available_cores())
        ) as pool:  # numpy and LAME release the GIL
            list(pool.map(partial(_write_mp3, tmp / AUDIO_DIR, seed), tracks))
        os.rename(tmp / AUDIO_DIR, root / AUDIO_DIR)
        os.rename(tmp / META_DIR, root / META_DIR)  # last: the metadata means "complete"
        logger.info("demo corpus ready in %.1f s", time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _complete(root: Path) -> bool:
    meta = root / META_DIR
    files = (meta / "tracks.csv", meta / "genres.csv")
    return all(f.is_file() for f in files) and (root / AUDIO_DIR).is_dir()


def _clear_leftovers(root: Path) -> None:
    """Remove what an interrupted synthesis left behind (the caller holds the lock)."""
    for stale in root.glob(".demo-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    if (root / META_DIR).exists():
        raise FileExistsError(
            f"{root / META_DIR} exists but {root} holds no complete demo corpus (it needs "
            f"{META_DIR}/tracks.csv, {META_DIR}/genres.csv and {AUDIO_DIR}/): remove "
            f"{root / META_DIR} to synthesize the demo again, or give the demo another folder"
        )
    if (root / AUDIO_DIR).exists():  # renamed before the metadata: an interrupted run
        logger.warning("removing %s, left incomplete by an interrupted run", root / AUDIO_DIR)
        shutil.rmtree(root / AUDIO_DIR)


def ensure_demo(root: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Synthesize (once) and return (meta_dir, audio_dir) = (root/"fma_metadata", root/"fma_demo").

    Returns at once when ``root`` holds a complete corpus. Safe with several processes (DDP
    ranks, DataLoader workers): one synthesizes under ``root/.demo.lock`` while the others
    wait, and the corpus appears by renames, never half-written. The same seed gives a
    byte-identical tracks.csv and identical audio.
    """
    root = Path(root)
    if not _complete(root):
        root.mkdir(parents=True, exist_ok=True)
        with exclusive(root / ".demo.lock", str(root), wait=True):
            if not _complete(root):  # another process may have finished meanwhile
                _clear_leftovers(root)
                _synthesize(root, seed)
    return root / META_DIR, root / AUDIO_DIR
