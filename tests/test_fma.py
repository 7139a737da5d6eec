"""FMA metadata: the real 3-row header, nested subsets, genres_all multi-hot, clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genretag.data import fma
from genretag.errors import ConfigError
from tests.conftest import make_fma

# The first two header rows of the real tracks.csv, byte for byte (shared/formats).
REAL_HEADER_ROW_2 = (
    ",comments,date_created,date_released,engineer,favorites,id,information,listens,producer,tags,"
    "title,tracks,type,active_year_begin,active_year_end,associated_labels,bio,comments,date_created,"
    "favorites,id,latitude,location,longitude,members,name,related_projects,tags,website,"
    "wikipedia_page,split,subset,bit_rate,comments,composer,date_created,date_recorded,duration,"
    "favorites,genre_top,genres,genres_all,information,interest,language_code,license,listens,"
    "lyricist,number,publisher,tags,title"
)


def _rows(rows: list[tuple]) -> pd.DataFrame:
    columns = [("set", "split"), ("set", "subset"), ("track", "genre_top"), ("track", "genres"),
               ("track", "genres_all"), ("track", "title"), ("artist", "name")]  # fmt: skip
    frame = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows])
    frame.columns = pd.MultiIndex.from_tuples(columns)
    return frame


@pytest.fixture
def meta(tmp_path: Path) -> Path:
    corpus = make_fma(tmp_path, per_split={"training": 1})
    rows = [
        (2, "training", "small", "Hip-Hop", "[21]", "[21]", "Food", "AWOL"),
        (3, "training", "medium", "Hip-Hop", "[21]", "[21]", 'Electric "Ave", part 2', "AWOL"),
        (5, "validation", "small", "Rock", "[25]", "[25, 12]", "line one\nline two", "A, B & C"),
        (10, "test", "large", "", "[76, 103]", "[17, 103, 76]", "<p>html</p>", "x"),
        (20, "training", "large", "", "[]", "[]", "no genre", "y"),
        (26, "training", "small", "Pop", "[10]", "[10]", "t", "z"),
        (30, "training", "small", "", "[25, 15]", "[25, 12, 15]", "two roots", "w"),
    ]
    fma.write_tracks_csv(corpus.meta_dir / "tracks.csv", _rows(rows))
    return corpus.meta_dir


def test_writes_and_reads_the_real_header(meta: Path):
    lines = (meta / "tracks.csv").read_text().split("\n")
    assert lines[1] == REAL_HEADER_ROW_2
    assert lines[2] == "track_id" + "," * 52
    tracks = fma.read_tracks(meta, cache=False)
    assert tracks.loc[3, "title"] == 'Electric "Ave", part 2'
    assert tracks.loc[5, "title"] == "line one\nline two"
    assert tracks.loc[5, "artist"] == "A, B & C"
    assert tracks.loc[10, "genres_all"] == [17, 103, 76]
    assert tracks.loc[20, "genres"] == [] and tracks.loc[20, "genres_all"] == []


def test_subsets_nest(meta: Path):
    tracks = fma.read_tracks(meta)
    assert set(fma.select_subset(tracks, "small").index) == {2, 5, 26, 30}
    assert set(fma.select_subset(tracks, "medium").index) == {2, 3, 5, 26, 30}
    assert set(fma.select_subset(tracks, "large").index) == {2, 3, 5, 10, 20, 26, 30}
    assert len(fma.select_subset(tracks, "full")) == len(tracks)
    with pytest.raises(ConfigError, match="data.subset: unknown subset 'tiny'"):
        fma.select_subset(tracks, "tiny")


def test_top_labels_are_roots_reached_through_genres_all(meta: Path):
    labelled = fma.label_tracks(meta, subset="large", labels="top")
    # roots present in training: Hip-Hop (21), Pop (10), Rock (12), Electronic (15); sorted by id
    assert labelled.labels == ["Pop", "Rock", "Electronic", "Hip-Hop"]
    targets = dict(zip(labelled.track_ids.tolist(), labelled.targets.tolist(), strict=True))
    assert targets[30] == [0, 1, 1, 0]  # Punk + Electronic -> Rock (Punk's root) and Electronic
    assert targets[20] == [0, 0, 0, 0]  # empty genre list: no label
    assert targets[10] == [1, 0, 0, 0]  # Experimental Pop (76) -> Pop; Folk is no training label
    ids, _ = labelled.split("validation")
    assert ids.tolist() == [5]


def test_all_labels_with_min_tracks(meta: Path):
    every = fma.label_tracks(meta, subset="large", labels="all", min_tracks=1)
    assert every.labels == ["Pop", "Rock", "Electronic", "Hip-Hop", "Punk"]
    frequent = fma.label_tracks(meta, subset="large", labels="all", min_tracks=2)
    assert frequent.labels == ["Hip-Hop"]  # the only genre of 2 training tracks (2 and 3)
    with pytest.raises(
        ConfigError, match="data.min_tracks: no genre .* has 9 training tracks .*most is 2"
    ):
        fma.label_tracks(meta, subset="large", labels="all", min_tracks=9)


def test_cache_is_used_and_invalidated_when_the_file_changes(meta: Path):
    first = fma.read_tracks(meta)
    assert list((meta / ".genretag-cache").glob("tracks-*.npz"))
    pd.testing.assert_frame_equal(first, fma.read_tracks(meta))
    fma.write_tracks_csv(
        meta / "tracks.csv",
        _rows([(2, "training", "small", "Rock", "[12]", "[12]", "Café – 日本 \U0001f3b5", "b")]),
    )
    changed = fma.read_tracks(meta)
    assert len(changed) == 1  # the cache of the old file is not used
    pd.testing.assert_frame_equal(changed, fma.read_tracks(meta))  # multi-byte text round-trips
    assert fma.read_tracks(meta)["title"].iloc[0] == "Café – 日本 \U0001f3b5"


class _Planted:
    def __reduce__(self):  # what unpickling would run
        return (Path.touch, (Path(os.environ["PLANTED_MARKER"]),))


def test_a_planted_cache_is_never_run(meta: Path, tmp_path: Path, monkeypatch):
    """A shared fma_metadata folder can carry a cache file: it is read as data or rebuilt."""
    first = fma.read_tracks(meta)
    (cache,) = (meta / ".genretag-cache").glob("tracks-*.npz")
    marker = tmp_path / "ran"
    monkeypatch.setenv("PLANTED_MARKER", str(marker))
    cache.write_bytes(pickle.dumps(_Planted()))
    pd.testing.assert_frame_equal(first, fma.read_tracks(meta))
    assert not marker.exists()


def test_audio_paths_follow_fma_layout():
    assert fma.audio_relpath(2) == "000/000002.mp3"
    assert fma.audio_relpath(155066) == "155/155066.mp3"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "does not exist; run `python -m genretag download fma_metadata`"),
        (lambda d: d.mkdir(), "has no tracks.csv"),
        (lambda d: (d.mkdir(), (d / "tracks.csv").write_text("track_id,split\n2,training\n")),
         "expected FMA's 3-row header"),
    ],
)  # fmt: skip
def test_bad_metadata_folders_are_clear_errors(tmp_path: Path, setup, message: str):
    meta = tmp_path / "meta"
    setup(meta)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fma.read_tracks(meta)


def test_missing_columns_are_named(tmp_path: Path, meta: Path):
    frame = pd.read_csv(meta / "tracks.csv", index_col=0, header=[0, 1])
    frame.drop(columns=[("track", "genres_all")]).to_csv(meta / "tracks.csv")
    with pytest.raises(ConfigError, match="missing columns track.genres_all"):
        fma.read_tracks(meta, cache=False)
    assert np.all(np.isin(["small"], fma.SUBSETS))
