"""`genretag compare`: tables from real TensorBoard event files and hparams.yaml, never mixed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from genretag.commands import compare
from genretag.errors import ConfigError

GENRES = ["Rock", "Electronic", "Hip-Hop"]
T0 = 1_700_000_000.0  # event wall times: a fixed past, so wall time is exact


def fake_run(
    folder: Path,
    hparams: dict,
    val: list[tuple[float, float]],
    test: dict[str, float] | None = None,
    per_label: dict[str, float] | None = None,
    clips_per_s: float | None = None,
    seconds: float = 100.0,
) -> Path:
    """A version folder as Lightning's TensorBoardLogger writes it: events + hparams.yaml."""
    folder.mkdir(parents=True)
    (folder / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    writer = SummaryWriter(str(folder))
    writer.add_scalar("train/loss", 0.9, 0, walltime=T0)
    for epoch, (roc, pr) in enumerate(val):
        step = 10 * (epoch + 1)
        writer.add_scalar("epoch", float(epoch), step, walltime=T0 + step)
        writer.add_scalar("val/roc_auc", roc, step, walltime=T0 + step)
        writer.add_scalar("val/pr_auc", pr, step, walltime=T0 + step)
    if clips_per_s is not None:
        writer.add_scalar("train/clips_per_s", clips_per_s, 10, walltime=T0 + 10)
    for tag, value in (test or {}).items():
        writer.add_scalar(f"test/{tag}", value, 30, walltime=T0 + seconds)
    for label, value in (per_label or {}).items():
        writer.add_scalar(f"test_roc_auc_per_label/{label}", value, 30, walltime=T0 + seconds)
    writer.close()
    return folder


CRNN_HPARAMS = {
    "labels": GENRES, "n_mels": 96, "channels": [4, 8, 8, 8], "gru_hidden": 8, "gru_layers": 1,
    "dropout": 0.1, "window_seconds": 10.0, "task": "multilabel",
}  # fmt: skip


@pytest.fixture
def runs(tmp_path: Path) -> list[str]:
    logs = tmp_path / "lightning_logs"
    a = fake_run(
        logs / "version_0",
        CRNN_HPARAMS,
        val=[(0.70, 0.40), (0.82, 0.55), (0.80, 0.60)],
        test={
            "roc_auc": 0.81,
            "roc_auc_lo": 0.78,
            "roc_auc_hi": 0.84,
            "pr_auc": 0.52,
            "pr_auc_lo": 0.47,
            "pr_auc_hi": 0.57,
        },  # fmt: skip
        per_label={"Rock": 0.9, "Electronic": 0.75, "Hip-Hop": 0.78},
        clips_per_s=123.5,
        seconds=3725.0,
    )
    fcn = {"class_path": "genretag.models.fcn.FCN", "init_args": {"channels": [8, 16]}}
    b = fake_run(
        logs / "version_1",
        {**CRNN_HPARAMS, "trunk": fcn, "window_seconds": 3.69, "n_params": 12345},
        val=[(0.60, 0.30), (0.65, 0.35)],
        test={"roc_auc": 0.66, "pr_auc": 0.31},
        per_label={"Rock": 0.7, "Hip-Hop": 0.6},
    )
    c = fake_run(
        logs / "version_2",
        {**CRNN_HPARAMS, "labels": ["Rock", "Pop"]},
        val=[(0.9, 0.8)],
    )
    return [str(a), str(b), str(c)]


EXPECTED = """\
warning: these runs differ in labels or data and are not comparable; 2 separate tables follow

## group 1: labels [Rock, Electronic, Hip-Hop]

| run | trunk | params | window s | best epoch | val ROC-AUC | val PR-AUC | test ROC-AUC [95% CI] | test PR-AUC [95% CI] | train clips/s | wall |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| lightning_logs/version_0 | CRNN | {crnn_params} | 10 | 1 | 0.8200 | 0.5500 | 0.8100 [0.7800, 0.8400] | 0.5200 [0.4700, 0.5700] | 123.5 | 1:02:05 |
| lightning_logs/version_1 | FCN | 12,345 | 3.69 | 1 | 0.6500 | 0.3500 | 0.6600 | 0.3100 | - | 0:01:40 |

| test ROC-AUC | lightning_logs/version_0 | lightning_logs/version_1 |
| --- | --- | --- |
| Rock | 0.9000 | 0.7000 |
| Electronic | 0.7500 | - |
| Hip-Hop | 0.7800 | 0.6000 |

## group 2: labels [Rock, Pop]

| run | trunk | params | window s | best epoch | val ROC-AUC | val PR-AUC | test ROC-AUC [95% CI] | test PR-AUC [95% CI] | train clips/s | wall |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| lightning_logs/version_2 | CRNN | {crnn2_params} | 10 | 0 | 0.9000 | 0.8000 | - | - | - | 0:00:10 |

| test ROC-AUC | lightning_logs/version_2 |
| --- | --- |
| Rock | - |
| Pop | - |
"""


def _crnn_params(labels: int) -> str:
    from genretag.models import count_parameters
    from genretag.models.crnn import CRNN

    trunk = CRNN(96, (4, 8, 8, 8), 8, 1, 0.1)
    return f"{count_parameters(trunk) + trunk.out_features * labels + labels:,}"


def test_table_values_order_and_groups(runs: list[str], capsys) -> None:
    assert compare.main(runs) == 0
    expected = EXPECTED.format(crnn_params=_crnn_params(3), crnn2_params=_crnn_params(2))
    assert capsys.readouterr().out == expected


def test_data_settings_split_runs_with_the_same_labels(tmp_path: Path, capsys) -> None:
    small = {"class_path": "genretag.data.datamodules.FMADataModule", "subset": "small"}
    a = fake_run(tmp_path / "a" / "version_0", {**CRNN_HPARAMS, "data": small}, [(0.7, 0.5)])
    b = fake_run(
        tmp_path / "b" / "version_0", {**CRNN_HPARAMS, "data": {**small, "subset": "medium"}},
        [(0.8, 0.6)],
    )  # fmt: skip
    compare.main([str(a), str(b)])
    out = capsys.readouterr().out
    assert out.startswith("warning: these runs differ")
    assert "data class_path=FMADataModule, subset=medium" in out


def test_csv_reads_back_with_pandas(runs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "table.csv"
    compare.main([*runs, "--out", str(out)])
    table = pd.read_csv(out)
    assert list(table["run"]) == [f"lightning_logs/version_{i}" for i in range(3)]
    assert list(table["group"]) == [1, 1, 2]
    assert list(table["trunk"]) == ["CRNN", "FCN", "CRNN"]
    assert table.loc[0, "test_roc_auc_lo"] == pytest.approx(0.78)
    assert table.loc[0, "best_epoch"] == 1 and table.loc[0, "wall_s"] == pytest.approx(3725)
    assert table.loc[1, "test_roc_auc/Rock"] == pytest.approx(0.7)
    assert pd.isna(table.loc[1, "test_roc_auc/Electronic"]) and pd.isna(table.loc[2, "clips_per_s"])


def test_markdown_out_file_and_bad_folder(runs: list[str], tmp_path: Path, capsys) -> None:
    compare.main([runs[0], "--out", str(tmp_path / "t.md")])
    assert (tmp_path / "t.md").read_text() == capsys.readouterr().out
    with pytest.raises(ConfigError, match="no TensorBoard scalars"):
        compare.read_run(tmp_path)
    assert compare.main([str(tmp_path)]) == 2  # the same as one line on stderr, exit code 2
    assert "has no TensorBoard scalars" in capsys.readouterr().err


def write_test_run(folder: Path, ckpt_path: str, roc: float, start: float) -> Path:
    """A `genretag test` version folder: test scalars only, config.yaml naming the checkpoint."""
    folder.mkdir(parents=True)
    (folder / "hparams.yaml").write_text(yaml.safe_dump(CRNN_HPARAMS))
    (folder / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": ckpt_path}))
    writer = SummaryWriter(str(folder))
    for tag, value in {"roc_auc": roc, "roc_auc_lo": roc - 0.05, "roc_auc_hi": roc + 0.05}.items():
        writer.add_scalar(f"test/{tag}", value, 0, walltime=start)
    writer.add_scalar("test_roc_auc_per_label/Rock", 0.99, 0, walltime=start)
    writer.close()
    return folder


def test_a_test_run_joins_the_row_of_the_fit_it_tested(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "runs" / "lightning_logs"
    fit = fake_run(logs / "version_0", CRNN_HPARAMS, val=[(0.7, 0.4), (0.9, 0.6)], seconds=20)
    other = fake_run(logs / "version_1", CRNN_HPARAMS, val=[(0.6, 0.3)], seconds=20)
    tested = write_test_run(
        logs / "version_2", str(fit / "checkpoints" / "best.ckpt"), 0.88, start=T0 + 5000
    )
    # a relative path from another working directory still names version_1 by its last parts
    relative = write_test_run(
        logs / "version_3", "lightning_logs/version_1/checkpoints/last.ckpt", 0.61, T0 + 6000
    )
    orphan = write_test_run(
        logs / "version_4", "/elsewhere/version_9/checkpoints/best.ckpt", 0.5, T0
    )
    out = tmp_path / "t.csv"
    assert (
        compare.main([str(p) for p in (fit, other, tested, relative, orphan)] + ["--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "not comparable" not in text
    table = pd.read_csv(out)
    assert list(table["run"]) == [
        "lightning_logs/version_0 + test version_2",
        "lightning_logs/version_1 + test version_3",
        "lightning_logs/version_4",
    ]
    assert list(table["test_roc_auc"]) == pytest.approx([0.88, 0.61, 0.5])
    assert table.loc[0, "val_roc_auc"] == pytest.approx(0.9)
    assert table.loc[0, "test_roc_auc_lo"] == pytest.approx(0.83)
    assert table.loc[0, "test_roc_auc/Rock"] == pytest.approx(0.99)
    assert table.loc[0, "wall_s"] == pytest.approx(20)  # the fit's, not up to the later test
    assert "| lightning_logs/version_0 + test version_2 | CRNN |" in text
    assert "0.8800 [0.8300, 0.9300]" in text
