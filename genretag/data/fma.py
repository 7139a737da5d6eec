"""The one place that knows FMA's layout: metadata files, subsets, splits, labels, audio paths.

pandas only (no torch), so the downloader, the benchmarks and the data module can all use it.
The formats are those of the real ``fma_metadata.zip`` (Defferrard et al., ISMIR 2017):
``tracks.csv`` has a 3-row header (two column levels and the index name) and free text with
commas, quotes and newlines; ``genres.csv`` is ``genre_id,#tracks,parent,title,top_level``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from genretag.errors import ConfigError
from genretag.io import atomic_write

log = logging.getLogger(__name__)

Subset = Literal["small", "medium", "large", "full"]
LabelMode = Literal["top", "all"]
SUBSETS: tuple[str, ...] = ("small", "medium", "large", "full")
SPLITS: tuple[str, ...] = ("training", "validation", "test")
# A track marked with a subset belongs to it and to every larger one; fma_full holds every row.
_SUBSET_MEMBERS = {
    "small": {"small"},
    "medium": {"small", "medium"},
    "large": {"small", "medium", "large"},
}

# Tracks known to be bad in the official archives (the dataset's README and issue tracker).
KNOWN_BAD_TRACKS: dict[int, str] = {
    99134: "no audio",
    108925: "no audio",
    133297: "no audio",
    1486: "mis-trimmed: 14.4 s instead of 30 s",
    65753: "mis-trimmed: 9.7 s instead of 30 s",
    105247: "mis-trimmed: 18.9 s instead of 30 s",
    126981: "mis-trimmed: 17.5 s instead of 30 s",
    127336: "mis-trimmed: 13.3 s instead of 30 s",
    143992: "mis-trimmed: 26.2 s instead of 30 s",
    2624: "passes its SHA1 but does not decode (fma_large)",
}

# Every column of the real tracks.csv, in order (the file's first two header rows).
TRACKS_CSV_COLUMNS: list[tuple[str, str]] = [
    *(("album", c) for c in "comments date_created date_released engineer favorites id information "
      "listens producer tags title tracks type".split()),
    *(("artist", c) for c in "active_year_begin active_year_end associated_labels bio comments "
      "date_created favorites id latitude location longitude members name related_projects tags "
      "website wikipedia_page".split()),
    ("set", "split"),
    ("set", "subset"),
    *(("track", c) for c in "bit_rate comments composer date_created date_recorded duration "
      "favorites genre_top genres genres_all information interest language_code license listens "
      "lyricist number publisher tags title".split()),
]  # fmt: skip
# tracks.csv columns we use -> short names in the parsed table.
TRACK_COLUMNS: dict[tuple[str, str], str] = {
    ("set", "split"): "split",
    ("set", "subset"): "subset",
    ("track", "genre_top"): "genre_top",
    ("track", "genres"): "genres",
    ("track", "genres_all"): "genres_all",
    ("track", "duration"): "duration",
    ("track", "bit_rate"): "bit_rate",
    ("track", "title"): "title",
    ("artist", "name"): "artist",
}
_CACHE_VERSION = 2  # 2: numpy arrays (.npz, no pickle), was a pickle


def audio_relpath(track_id: int) -> str:
    """Path of a track's MP3 inside an audio folder: 2 -> ``000/000002.mp3``."""
    return f"{track_id // 1000:03d}/{track_id:06d}.mp3"


def _meta_file(meta_dir: str | os.PathLike, name: str) -> Path:
    meta_dir = Path(meta_dir)
    if not meta_dir.is_dir():
        raise ConfigError(
            f"data.meta_dir: {meta_dir} does not exist; run `python -m genretag download "
            f"fma_metadata` or pass --data.meta_dir with the folder that holds tracks.csv"
        )
    path = meta_dir / name
    if not path.is_file():
        raise ConfigError(
            f"data.meta_dir: {meta_dir} has no {name}; unpack fma_metadata.zip there "
            f"(`python -m genretag download fma_metadata`)"
        )
    return path


def read_genres(meta_dir: str | os.PathLike) -> pd.DataFrame:
    """genres.csv indexed by genre_id, with columns parent, title, top_level."""
    path = _meta_file(meta_dir, "genres.csv")
    genres = pd.read_csv(path, index_col=0)
    missing = {"parent", "title", "top_level"} - set(genres.columns)
    if genres.index.name != "genre_id" or missing:
        raise ConfigError(
            f"{path}: not FMA's genres.csv (expected genre_id,#tracks,parent,title,top_level)"
        )
    return genres


def _parse_id_lists(column: pd.Series) -> list[list[int]]:
    """``"[17, 10, 76]"`` -> ``[17, 10, 76]``; empty or missing -> ``[]`` (vectorised split)."""
    text = column.fillna("[]").astype(str).str.strip("[] ")
    return [[int(g) for g in s.split(",")] if s else [] for s in text]


def _parse_tracks(path: Path) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, header=[0, 1], index_col=0, nrows=0)
    except Exception as error:
        raise ConfigError(f"{path}: cannot be read as FMA's tracks.csv ({error})") from None
    if not isinstance(header.columns, pd.MultiIndex) or header.index.name != "track_id":
        raise ConfigError(
            f"{path}: expected FMA's 3-row header (two column levels, then `track_id`); "
            f"this file has another header. Use the tracks.csv from fma_metadata.zip unchanged."
        )
    missing = [f"{a}.{b}" for a, b in TRACK_COLUMNS if (a, b) not in header.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing columns {', '.join(missing)}; use FMA's tracks.csv from "
            f"fma_metadata.zip unchanged (`python -m genretag download fma_metadata`)"
        )
    # Read only the columns we need (pandas cannot combine usecols with a 2-level header, so skip
    # the 3 header rows, already checked above, and address columns by position).
    position = {short: header.columns.get_loc(c) + 1 for c, short in TRACK_COLUMNS.items()}
    raw = pd.read_csv(path, header=None, skiprows=3, index_col=0, usecols=[0, *position.values()])
    tracks = pd.DataFrame({short: raw[i] for short, i in position.items()}, index=raw.index)
    tracks.index = tracks.index.astype(np.int64)
    tracks.index.name = "track_id"
    tracks["genres"] = _parse_id_lists(tracks["genres"])
    tracks["genres_all"] = _parse_id_lists(tracks["genres_all"])
    return tracks


def write_tracks_csv(path: str | os.PathLike, rows: pd.DataFrame) -> None:
    """Write ``rows`` as FMA's tracks.csv: the real 52 columns and 3-row header.

    ``rows`` is indexed by track id, with (top, sub) MultiIndex columns or a subset of them; the
    columns it lacks are left empty, as in the real file. For the demo corpus and test fixtures.
    """
    table = pd.DataFrame(index=rows.index, columns=pd.MultiIndex.from_tuples(TRACKS_CSV_COLUMNS))
    table = table.astype(object)
    for column in rows.columns:
        table[column] = rows[column].to_numpy()
    table.index.name = "track_id"
    table.to_csv(path)


def _cache_path(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{_CACHE_VERSION}"
    name = f"tracks-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    local = path.parent / ".genretag-cache"
    if os.access(path.parent, os.W_OK) or local.is_dir():
        return local / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genretag" / name


def _save_cache(handle, tracks: pd.DataFrame) -> None:
    """The parsed table as plain arrays (numbers and UTF-8 bytes): no pickle, so no code."""
    arrays = {"track_id": tracks.index.to_numpy(np.int64)}
    for name, column in tracks.items():
        if name in ("genres", "genres_all"):
            arrays[f"{name}.lengths"] = np.array([len(ids) for ids in column], np.int64)
            arrays[f"{name}.ids"] = np.array([g for ids in column for g in ids], np.int64)
        elif pd.api.types.is_numeric_dtype(column):
            arrays[name] = column.to_numpy()
        else:  # text: one UTF-8 buffer and each row's length (fixed width would be huge)
            texts = [str(v) for v in column.fillna("")]
            arrays[f"{name}.missing"] = column.isna().to_numpy()
            arrays[f"{name}.lengths"] = np.array([len(t) for t in texts], np.int64)  # characters
            arrays[name] = np.frombuffer("".join(texts).encode("utf-8", "surrogatepass"), np.uint8)
    np.savez(handle, **arrays)


def _split(flat: list | str, lengths: np.ndarray) -> list:
    """``flat`` cut into consecutive pieces of ``lengths``."""
    ends = np.cumsum(lengths).tolist()
    return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _load_cache(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as arrays:  # never unpickles: a cache is data
        columns = {}
        for name in TRACK_COLUMNS.values():
            if name in ("genres", "genres_all"):
                columns[name] = _split(arrays[f"{name}.ids"].tolist(), arrays[f"{name}.lengths"])
            elif f"{name}.missing" in arrays:
                text = arrays[name].tobytes().decode("utf-8", "surrogatepass")
                values = np.array(_split(text, arrays[f"{name}.lengths"]), object)
                values[arrays[f"{name}.missing"]] = np.nan
                columns[name] = values
            else:
                columns[name] = arrays[name]
        index = pd.Index(arrays["track_id"], name="track_id")
    return pd.DataFrame(columns, index=index)


def read_tracks(meta_dir: str | os.PathLike, cache: bool = True) -> pd.DataFrame:
    """The columns of tracks.csv that matter, one row per track, indexed by track_id.

    Columns: split, subset, genre_top, genres (list[int]), genres_all (list[int]), duration,
    bit_rate, title, artist. The parsed table is cached next to the file (keyed by its path,
    size and mtime) as numpy arrays, never a pickle, so the 106,574-row file is parsed once.
    """
    path = _meta_file(meta_dir, "tracks.csv")
    cached = _cache_path(path)
    if cache and cached.is_file():
        try:
            return _load_cache(cached)
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cached, error)
    tracks = _parse_tracks(path)
    if cache:
        try:
            atomic_write(cached, lambda f: _save_cache(f, tracks))
        except OSError as error:
            log.warning("could not cache the parsed tracks.csv in %s (%s)", cached.parent, error)
    return tracks


def select_subset(tracks: pd.DataFrame, subset: str) -> pd.DataFrame:
    """Rows of ``subset``; subsets nest (small ⊂ medium ⊂ large), ``full`` is every row."""
    if subset not in SUBSETS:
        raise ConfigError(
            f"data.subset: unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}"
        )
    if subset == "full":
        return tracks
    return tracks[tracks["subset"].isin(_SUBSET_MEMBERS[subset])]


@dataclass(frozen=True)
class LabelledTracks:
    """One subset's tracks with multi-hot targets over a label vocabulary."""

    track_ids: np.ndarray  # (N,) int64
    splits: np.ndarray  # (N,) str: training / validation / test
    targets: np.ndarray  # (N, C) float32 multi-hot
    labels: list[str]  # C genre titles
    label_ids: list[int]  # C genre ids

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(track_ids, targets) of one official split."""
        mask = self.splits == name
        return self.track_ids[mask], self.targets[mask]


def label_tracks(
    meta_dir: str | os.PathLike,
    subset: str = "small",
    labels: str = "top",
    min_tracks: int = 1,
) -> LabelledTracks:
    """Multi-label targets for one subset from ``genres_all``.

    ``labels="top"``: the root genres reached through genres_all; ``"all"``: every genre. In
    both, a label is kept when at least ``min_tracks`` training tracks of the subset carry it.
    Labels are ordered by genre id, so the same data always gives the same vocabulary.
    """
    if labels not in ("top", "all"):
        raise ConfigError(f"data.labels: {labels!r} is not one of top, all")
    genres = read_genres(meta_dir)
    tracks = select_subset(read_tracks(meta_dir), subset)
    tracks = tracks[tracks["split"].isin(SPLITS)]
    top_level = genres["top_level"].to_dict()
    if labels == "top":
        per_track = [{top_level[g] for g in gs if g in top_level} for gs in tracks["genres_all"]]
    else:
        per_track = [{g for g in gs if g in top_level} for gs in tracks["genres_all"]]
    training = (tracks["split"] == "training").to_numpy()
    counts: dict[int, int] = {}
    for genre_set, is_training in zip(per_track, training, strict=True):
        if is_training:
            for g in genre_set:
                counts[g] = counts.get(g, 0) + 1
    label_ids = sorted(g for g, n in counts.items() if n >= min_tracks)
    if not label_ids:
        most = max(counts.values(), default=0)
        raise ConfigError(
            f"data.min_tracks: no genre of subset {subset!r} has {min_tracks} training tracks "
            f"(the most is {most}); lower --data.min_tracks"
        )
    column = {g: i for i, g in enumerate(label_ids)}
    targets = np.zeros((len(tracks), len(label_ids)), np.float32)
    for row, genre_set in enumerate(per_track):
        for g in genre_set:
            if g in column:
                targets[row, column[g]] = 1.0
    return LabelledTracks(
        track_ids=tracks.index.to_numpy(np.int64),
        splits=tracks["split"].to_numpy(str),
        targets=targets,
        labels=[str(genres.at[g, "title"]) for g in label_ids],
        label_ids=label_ids,
    )
