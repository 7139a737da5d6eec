"""Interrupted training: SIGKILL part-way, a kill or a full disk during a checkpoint save.

Each run is `python -m genretag fit` in a subprocess, as a user runs it, with the checkpoint
callbacks of configs/demo.yaml; tests/faults.py makes the process kill itself (or cut its own
writes) at a chosen global step, so the fault lands at the same point every time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from genretag.checkpoint import read_checkpoint
from genretag.resume import AtomicCheckpointIO
from tests.conftest import Corpus, make_fma
from tests.faults import CUT_WRITES_AT_STEP, IGNORE_SIGXFSZ, KILL_AT_STEP

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4  # 16 training clips, batches of 4
EPOCHS = 2


def write_config(root: Path, corpus: Corpus, logger: bool = True, workers: int = 0) -> Path:
    """A tiny seeded fit with the shipped checkpoint callbacks, plus tests.faults.Faults.

    Without the logger, checkpoints go to ``root/checkpoints`` and no other file is written
    (for the tests that limit file sizes: TensorBoard's event file outgrows the tiny checkpoints).
    """
    shipped = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["trainer"]["callbacks"]
    if not logger:  # LearningRateMonitor needs one
        shipped = [c for c in shipped if "ModelCheckpoint" in c["class_path"]]
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": EPOCHS,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "default_root_dir": str(root),
            "logger": logger,
            "callbacks": [*shipped, {"class_path": "tests.faults.Faults"}],
        },
        "model": {"channels": [4, 8, 8, 8], "gru_hidden": 8, "gru_layers": 1, "lr": 0.01},
        "data": {
            "class_path": "genretag.data.datamodules.FMADataModule",
            "init_args": {
                "meta_dir": str(corpus.meta_dir),
                "audio_dir": str(corpus.audio_dir),
                "window_seconds": 1.0,
                "batch_size": 4,
                "num_workers": workers,
            },
        },
    }
    path = root / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def genretag(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m genretag ARGS`` in ``cwd`` with extra environment variables."""
    # One torch thread: bit-for-bit comparable runs, and no OpenMP threads spinning against the
    # decoding and the other tests on a small machine (a step is 50x slower oversubscribed).
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "genretag", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def load(path: Path) -> dict[str, Any]:
    return read_checkpoint(path)  # as data, like every checkpoint the project writes


def scalars(log_dir: Path, tag: str) -> dict[int, float]:
    """{step: value} of one TensorBoard scalar in a run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    return {e.step: e.value for e in events.Scalars(tag)} if tag in events.Tags()["scalars"] else {}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("fma")
    return make_fma(root, per_split={"training": 4, "validation": 2, "test": 1}, seconds=2.0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Path:
    """The run folder (version_0) of the same fit, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    done = genretag(root, "fit", "--config", str(write_config(root, corpus)))
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "lightning_logs" / "version_0"


def assert_same_final_state(ours: dict[str, Any], reference: Path) -> None:
    """A resumed run ends where the uninterrupted one did: same step, weights, optimizer, LR."""
    theirs = load(reference / "checkpoints" / "last.ckpt")
    assert (ours["epoch"], ours["global_step"]) == (EPOCHS - 1, EPOCHS * STEPS_PER_EPOCH)
    assert (theirs["epoch"], theirs["global_step"]) == (ours["epoch"], ours["global_step"])
    # Seeded CPU runs, and the random state travels with the checkpoint: bit for bit the same.
    for key, value in theirs["state_dict"].items():
        torch.testing.assert_close(ours["state_dict"][key], value, rtol=0, atol=0, msg=key)
    mine, other = ours["optimizer_states"][0]["state"], theirs["optimizer_states"][0]["state"]
    for index, moments in other.items():
        for name, value in moments.items():
            torch.testing.assert_close(mine[index][name], value, rtol=0, atol=0)
    assert ours["lr_schedulers"] == theirs["lr_schedulers"]


def test_sigkill_mid_epoch_resumes_with_ckpt_path_last_and_matches(
    tmp_path: Path, corpus: Corpus, reference: Path
) -> None:
    config = str(write_config(tmp_path, corpus))
    kill_at = STEPS_PER_EPOCH + 2  # two batches into the second epoch
    killed = genretag(tmp_path, "fit", "--config", config, **{KILL_AT_STEP: str(kill_at)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    first = tmp_path / "lightning_logs" / "version_0"
    saved = load(first / "checkpoints" / "last.ckpt")
    assert (saved["epoch"], saved["global_step"]) == (0, STEPS_PER_EPOCH)
    assert saved["optimizer_states"][0]["state"], "AdamW moments are in the checkpoint"
    assert saved["lr_schedulers"][0]["last_epoch"] == STEPS_PER_EPOCH

    # A new run folder (version_1), where Lightning alone would find no last.ckpt and start over.
    resumed = genretag(tmp_path, "fit", "--config", config, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    picked = f"--ckpt_path last: resuming from {first / 'checkpoints' / 'last.ckpt'}"
    assert picked in resumed.stderr
    second = tmp_path / "lightning_logs" / "version_1"
    # it starts at the checkpoint's step: nothing before it is trained again
    assert min(scalars(second, "train/loss")) == STEPS_PER_EPOCH
    assert_same_final_state(load(second / "checkpoints" / "last.ckpt"), reference)
    final = EPOCHS * STEPS_PER_EPOCH - 1
    for name in ("val/roc_auc", "val/pr_auc", "val/f1", "val/loss"):
        assert scalars(second, name)[final] == scalars(reference, name)[final], name


def test_two_loader_workers_killed_and_resumed_end_bitwise_as_one_run_without_workers(
    tmp_path: Path, corpus: Corpus, reference: Path
) -> None:
    """Crops are seeded per item (seed, epoch, index) and the order per epoch: with 2 decoding
    workers a run killed mid-epoch and resumed ends bit for bit where an uninterrupted run with
    no workers did, so neither the worker count nor the kill changes a number."""
    config = str(write_config(tmp_path, corpus, workers=2))
    kill_at = STEPS_PER_EPOCH + 2
    killed = genretag(tmp_path, "fit", "--config", config, **{KILL_AT_STEP: str(kill_at)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = genretag(tmp_path, "fit", "--config", config, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = tmp_path / "lightning_logs" / "version_1"
    assert_same_final_state(load(second / "checkpoints" / "last.ckpt"), reference)
    final = EPOCHS * STEPS_PER_EPOCH - 1
    assert scalars(second, "val/roc_auc")[final] == scalars(reference, "val/roc_auc")[final]


def test_checkpoint_saves_survive_a_full_disk_and_a_kill_part_way(
    tmp_path: Path, corpus: Corpus, reference: Path
) -> None:
    """At the end of the last epoch the save fails (EFBIG, as on a full disk); the re-run is
    killed inside the same save (SIGXFSZ); the one after finishes, as if nothing happened."""
    config = str(write_config(tmp_path, corpus, logger=False))
    checkpoints = tmp_path / "checkpoints"
    at_save = str(EPOCHS * STEPS_PER_EPOCH)

    full = genretag(
        tmp_path, "fit", "--config", config, **{CUT_WRITES_AT_STEP: at_save, IGNORE_SIGXFSZ: "1"}
    )
    assert full.returncode == 1, full.stderr[-3000:]
    last_line = full.stderr.strip().splitlines()[-1]
    assert last_line.startswith("genretag: error: could not write the checkpoint")
    assert "(File too large); the previous one is intact" in last_line
    assert last_line.endswith("free some space and re-run with --ckpt_path last")
    assert "Traceback" not in full.stderr
    saved = load(checkpoints / "last.ckpt")  # the previous epoch's, whole
    assert (saved["epoch"], saved["global_step"]) == (EPOCHS - 2, (EPOCHS - 1) * STEPS_PER_EPOCH)
    assert not list(checkpoints.glob(".*.tmp"))  # a failed write cleans up after itself

    killed = genretag(
        tmp_path, "fit", "--config", config, "--ckpt_path", "last", **{CUT_WRITES_AT_STEP: at_save}
    )
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr[-3000:]  # killed inside a write
    assert load(checkpoints / "last.ckpt")["global_step"] == saved["global_step"]  # still whole
    load(checkpoints / "best.ckpt")
    [partial] = checkpoints.glob(".*.tmp")  # what the kill left: the cut temporary file
    assert partial.stat().st_size < (checkpoints / "last.ckpt").stat().st_size

    resumed = genretag(tmp_path, "fit", "--config", config, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoints / 'last.ckpt'}" in resumed.stderr
    assert not list(checkpoints.glob(".*.tmp"))  # the next save removed the leftover
    assert_same_final_state(load(checkpoints / "last.ckpt"), reference)


def test_atomic_writer_never_touches_tmpdir_and_keeps_the_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = tmp_path / "ckpts" / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"step": torch.tensor(1)}, path)
    assert load(path)["step"] == 1 and not list(scratch.iterdir())

    def fail_half_way(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail_half_way)
    with pytest.raises(OSError, match="could not write the checkpoint .*last.ckpt.*intact"):
        writer.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
