"""Bad configuration through the CLI: one line naming the key or path and the fix, exit code 2.

tests/test_training.py already covers an unknown subset, a missing meta_dir, an empty audio_dir,
a min_tracks no genre reaches and a checkpoint whose labels differ; tests/test_fma.py the
metadata parser. These are the rest, as a user meets them: through ``main`` and, once, through
``python -m genretag`` in a subprocess.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from genretag.cli import main
from genretag.errors import ConfigError
from tests.conftest import Corpus, fit_args, make_fma


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("fma")
    return make_fma(root, per_split={"training": 1, "validation": 1, "test": 1}, seconds=1.0)


def _meta(corpus: Corpus, folder: Path, tracks: Callable[[Path], None] | None) -> Path:
    """A copy of the metadata folder whose tracks.csv is written by ``tracks`` (None: absent)."""
    folder.mkdir()
    shutil.copy(corpus.meta_dir / "genres.csv", folder)
    if tracks is not None:
        tracks(folder / "tracks.csv")
    return folder


def _drop_columns(corpus: Corpus) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        frame = pd.read_csv(corpus.meta_dir / "tracks.csv", header=[0, 1], index_col=0)
        frame.drop(columns=[("track", "genres_all"), ("set", "split")]).to_csv(path)

    return write


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line on stderr (the log lines before it aside), with no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("genretag: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("meta-without-tracks", ["data.meta_dir:", "has no tracks.csv", "unpack fma_metadata.zip"]),
        ("one-row-header", ["tracks.csv: expected FMA's 3-row header", "from fma_metadata.zip unchanged"]),
        ("missing-columns", ["missing columns set.split, track.genres_all", "fma_metadata.zip unchanged"]),
        ("audio-dir-empty", ["data.audio_dir: none of the 4 training tracks", "first path tried: {empty}/000/000002.mp3", "fix --data.audio_dir"]),
    ],
)  # fmt: skip
def test_bad_data_settings(
    tmp_path: Path,
    corpus: Corpus,
    capsys: pytest.CaptureFixture[str],
    case: str,
    expected: list[str],
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    override = {
        "meta-without-tracks": lambda: f"--data.meta_dir={_meta(corpus, tmp_path / 'm', None)}",
        "one-row-header": lambda: (
            "--data.meta_dir="
            + str(
                _meta(
                    corpus, tmp_path / "m", lambda p: p.write_text("track_id,split\n2,training\n")
                )
            )
        ),
        "missing-columns": lambda: (
            f"--data.meta_dir={_meta(corpus, tmp_path / 'm', _drop_columns(corpus))}"
        ),
        "audio-dir-empty": lambda: f"--data.audio_dir={empty}",
    }[case]()
    assert main([*fit_args(corpus, tmp_path), override]) == 2
    line = _one_line(capsys)
    for text in expected:
        assert text.format(empty=empty) in line, line


def _not_a_genretag_checkpoint(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    text, other, missing = folder / "notes.ckpt", folder / "other.ckpt", folder / "gone.ckpt"
    text.write_text("not a checkpoint\n")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, other)
    return {"text": text, "other-model": other, "missing": missing}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("text", "not a readable checkpoint"), ("other-model", "not a genretag checkpoint"),
     ("missing", "no such checkpoint file")],
)  # fmt: skip
def test_test_with_a_ckpt_path_that_is_not_a_genretag_checkpoint(
    tmp_path: Path, corpus: Corpus, capsys: pytest.CaptureFixture[str], kind: str, reason: str
) -> None:
    path = _not_a_genretag_checkpoint(tmp_path)[kind]
    args = ["test", *fit_args(corpus, tmp_path)[1:], "--ckpt_path", str(path)]
    assert main(args) == 2
    line = _one_line(capsys)
    assert line.startswith(f"genretag: error: --ckpt_path: {path}: {reason}")
    assert "pass a .ckpt written by `genretag fit`" in line
    with pytest.raises(ConfigError, match=reason):  # --verbose: the exception and its traceback
        main([*args, "--verbose"])


def test_a_user_sees_one_line_and_exit_code_2(tmp_path: Path, corpus: Corpus) -> None:
    """Through `python -m genretag`, as typed in a shell."""
    path = _not_a_genretag_checkpoint(tmp_path)["other-model"]
    args = ["test", *fit_args(corpus, tmp_path)[1:], "--ckpt_path", str(path)]
    done = subprocess.run(
        [sys.executable, "-m", "genretag", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [  # nothing else: no warning, no traceback
        f"genretag: error: --ckpt_path: {path}: not a genretag checkpoint (no labels/sample_rate "
        f"in its hyper-parameters); pass a .ckpt written by `genretag fit` "
        f"(lightning_logs/version_N/checkpoints/) (--verbose for details)"
    ]
    assert done.stdout == ""


# -- configs as a base plus overlays --------------------------------------------------------------
def test_an_overlay_holds_only_what_differs_and_the_cli_reads_it_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from genretag import configs

    shipped = Path(__file__).resolve().parents[1] / "configs"
    overlay = configs.read(shipped / "fma_medium.yaml")
    base = configs.read(shipped / "fma_small.yaml")
    assert overlay["data"]["init_args"]["subset"] == "medium"
    assert overlay["model"] == base["model"] and overlay["trainer"]["max_epochs"] == 30
    assert "ModelCheckpoint" not in (shipped / "fma_medium.yaml").read_text()
    mine = tmp_path / "mine.yaml"  # a user's own overlay, a base of its own on top
    mine.write_text(f"base: {shipped / 'fma_small_fcn.yaml'}\nmodel: {{lr: 0.0005}}\n")
    assert main(["fit", "--config", str(mine), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "genretag.models.fcn.FCN" in printed and "lr: 0.0005" in printed
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match=r"loop.yaml: its base chain loops back to itself"):
        configs.read(loop)
