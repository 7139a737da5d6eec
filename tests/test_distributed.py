"""Two-process DDP (gloo, CPU) with no code changes: sharded training, synced metrics, one checkpoint.

The DDP run trains (so its weights differ from any single-process run's); what must hold is that
the validation metrics it logs, computed on two shards and synchronised, equal those of a
single-process ``validate`` of the checkpoint it wrote. The fixture's validation set has 8 clips,
a multiple of 2, so the DistributedSampler pads nothing.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning import seed_everything

from genretag.checkpoint import read_checkpoint
from genretag.cli import lightning_cli
from genretag.task import TaggingTask
from tests.conftest import TINY_MODEL, make_fma

# Same weights, same clips; only the batch composition differs (4 clips per rank vs 4 per batch),
# which changes float rounding in the convolutions, not the result beyond this.
TOLERANCE = 1e-5
METRICS = ("val/loss", "val/roc_auc", "val/pr_auc", "val/f1")


def _data_args(meta: Path, audio: Path) -> list[str]:
    return [
        "--seed_everything=0",
        "--data=genretag.data.datamodules.FMADataModule",
        f"--data.meta_dir={meta}",
        f"--data.audio_dir={audio}",
        "--data.window_seconds=1.0",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        *TINY_MODEL,
    ]


def _last_row(metrics_csv: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get("val/roc_auc")]
    return {k: float(v) for k, v in rows[-1].items() if v}


def test_ddp_fit_on_two_cpu_processes_matches_a_single_process_validation(tmp_path: Path):
    corpus = make_fma(tmp_path / "fma", {"training": 4, "validation": 2, "test": 1})
    data = _data_args(corpus.meta_dir, corpus.audio_dir)
    run = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "genretag", "fit", *data,
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={run}",
        "--trainer.logger=pytorch_lightning.loggers.CSVLogger", f"--trainer.logger.save_dir={run}",
        "--model.lr=0.01",
        "--model.freeze_trunk_epochs=1",  # DDP with a frozen trunk: gradients dropped, not disabled
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    # checkpoints and logs written once, by rank 0
    checkpoints = list(run.rglob("*.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    assert [p.name for p in (run / "lightning_logs").iterdir()] == ["version_0"]
    # each rank trained on its own half: 16 clips / 2 ranks / 4 per batch = 2 steps (1 process: 4)
    assert checkpoints[0].name == "epoch=0-step=2.ckpt"
    logged = _last_row(run / "lightning_logs" / "version_0" / "metrics.csv")

    single = lightning_cli(
        ["validate", *data, f"--trainer.default_root_dir={tmp_path / 'single'}",
         f"--ckpt_path={checkpoints[0]}"]
    )  # fmt: skip
    reference = {k: float(v) for k, v in single.trainer.callback_metrics.items()}
    for name in METRICS:
        assert logged[name] == pytest.approx(reference[name], abs=TOLERANCE), name
    assert (
        0.0 < reference["val/roc_auc"] < 1.0 and reference["val/roc_auc"] != 0.5
    )  # not degenerate

    # the frozen trunk is still its seeded initialisation; the head trained
    state = read_checkpoint(checkpoints[0])  # as data, like every checkpoint the project writes
    seed_everything(0)
    init = TaggingTask(
        labels=state["hyper_parameters"]["labels"],
        channels=(4, 8, 8, 8),
        gru_hidden=8,
        gru_layers=1,
    ).state_dict()
    for key, value in init.items():
        if key.startswith("trunk."):
            torch.testing.assert_close(state["state_dict"][key], value, msg=key)
    assert not torch.equal(state["state_dict"]["head.1.weight"], init["head.1.weight"])
