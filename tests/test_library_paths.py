"""Files as the user knows them: truncated files named with both lengths, paths kept as the
library reached them (symlinked folders, names that are not UTF-8)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from genretag.cli import lightning_cli
from genretag.tagger.command import main as tag_main
from genretag.tagger.scan import display_path, real_path
from tests.conftest import fit_args, make_fma, write_mp3
from tests.test_tagging import LABELS, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", LABELS)


def truncate(path: Path, keep: float = 0.25) -> None:
    """Cut an MP3 as an interrupted download does: its Xing header still declares the whole."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_file_is_tagged_and_listed_with_both_lengths(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    library = tmp_path / "library"
    write_mp3(library / "whole.mp3", 4.0, 440.0)
    write_mp3(library / "cut.mp3", 20.0, 220.0)
    truncate(library / "cut.mp3")
    out = tmp_path / "tags.csv"
    with caplog.at_level(logging.WARNING):
        assert tag_main([str(library), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    rows = pd.read_csv(out)
    assert sorted(Path(p).name for p in rows.path) == ["cut.mp3", "whole.mp3"]  # both tagged
    [listed] = pd.read_csv(tmp_path / "tags.errors.csv").itertuples()
    assert listed.path == str(library / "cut.mp3")
    assert listed.error.startswith("truncated: decodes to ") and "declares 20.0" in listed.error
    named = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert any(str(library / "cut.mp3") in m and "declares 20.0" in m for m in named)


def test_training_names_a_truncated_track_once_with_both_lengths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = make_fma(tmp_path / "fma", per_split={"training": 1, "validation": 1, "test": 1})
    tracks = pd.read_csv(corpus.meta_dir / "tracks.csv", header=[0, 1], index_col=0)
    val_id = int(tracks.index[tracks[("set", "split")] == "validation"][0])
    write_mp3(corpus.path(val_id), 20.0, 330.0)
    truncate(corpus.path(val_id))
    with caplog.at_level(logging.WARNING):
        lightning_cli(fit_args(corpus, tmp_path, "--trainer.max_epochs=2"))
    named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("truncated ")]
    assert len(named) == 1, named  # once, over the sanity check and two epochs
    assert str(corpus.path(val_id)) in named[0] and "header declares 20.00 s" in named[0]


def test_paths_stay_as_the_library_reaches_them(ckpt: Path, tmp_path: Path) -> None:
    outside = tmp_path / "disk2" / "jazz"
    write_mp3(outside / "take 5.mp3", 2.0, 440.0)
    library = tmp_path / "Music"
    library.mkdir()
    (library / "Jazz").symlink_to(outside, target_is_directory=True)
    latin1 = os.fsdecode(b"caf\xe9 au lait.mp3")  # a Latin-1 name: not valid UTF-8
    write_mp3(library / "cafe.mp3", 2.0, 550.0)  # soundfile takes UTF-8 names only
    os.rename(library / "cafe.mp3", library / latin1)
    out = tmp_path / "tags.csv"
    assert tag_main([str(library), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    rows = pd.read_csv(out)  # pandas reads it: the output is valid UTF-8
    assert sorted(rows.path) == sorted(
        [str(library / "Jazz" / "take 5.mp3"), display_path(library / latin1)]
    )  # the symlinked folder keeps its library path, not the resolved /disk2/jazz
    recovered = {real_path(p) for p in rows.path}
    assert library / latin1 in recovered and all(p.exists() for p in recovered)
    # a re-run recognises both files as done
    assert tag_main([str(library), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 2
