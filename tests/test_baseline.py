"""`genretag baseline` on the real-MP3 fixture corpus: it runs, skips bad files, compare reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from genretag.commands import baseline, compare
from genretag.errors import ConfigError
from tests.conftest import make_fma


def _config(tmp_path: Path, corpus) -> Path:
    config = {
        "data": {
            "class_path": "genretag.data.datamodules.FMADataModule",
            "init_args": {"meta_dir": str(corpus.meta_dir), "audio_dir": str(corpus.audio_dir)},
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "workers", [0, pytest.param(2, marks=pytest.mark.slow)], ids=["in-process", "pool"]
)
def test_baseline_run_is_a_run_compare_shows(tmp_path: Path, capsys, workers: int) -> None:
    corpus = make_fma(tmp_path / "fma", {"training": 3, "validation": 2, "test": 2}, seconds=2.0)
    corpus.path(corpus.track_ids[0]).write_bytes(b"not an mp3 at all" * 100)
    logs = tmp_path / "logs"
    assert (
        baseline.main(
            ["--config", str(_config(tmp_path, corpus)), "--out", str(logs), f"--workers={workers}"]
        )
        == 0
    )
    folder = logs / "baseline" / "version_0"
    assert capsys.readouterr().out.strip() == str(folder)
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["trunk"] == "baseline-logreg"
    assert hparams["labels"] == ["Rock", "Electronic", "Hip-Hop"]
    assert hparams["n_params"] == 3 * (86 + 1)
    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    assert scalars["skipped_files"] == 1
    # Pure tones per genre: the features separate them.
    assert scalars["val/roc_auc"] > 0.8 and scalars["test/roc_auc"] > 0.8
    assert scalars["test/roc_auc_lo"] <= scalars["test/roc_auc"] <= scalars["test/roc_auc_hi"]
    assert {"test_roc_auc_per_label/Rock", "test/pr_auc_hi"} <= set(scalars)

    assert compare.main([str(folder)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| baseline/version_0"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["baseline-logreg", "261", "-", "0"]
    assert (
        cells[7]
        == f"{scalars['test/roc_auc']:.4f} [{scalars['test/roc_auc_lo']:.4f}, {scalars['test/roc_auc_hi']:.4f}]"
    )
    assert "| Rock |" in table


def test_clip_features_are_86_finite_numbers() -> None:
    t = np.arange(16_000) / 16_000
    features = baseline.clip_features(
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000
    )
    assert features.shape == (86,) and np.isfinite(features).all()


def test_unknown_option_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="--model.trunk"):
        baseline._main(["--config", "x.yaml", "--model.trunk", "FCN"])
    assert baseline.main(["--config", "x.yaml", "--model.trunk", "FCN"]) == 2  # one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model.trunk" in err
