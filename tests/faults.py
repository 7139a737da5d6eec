"""Faults injected into a `python -m genretag fit` subprocess, chosen by environment variables.

The test config lists ``tests.faults.Faults`` among the callbacks; without the variables it does
nothing, so the same config serves the interrupted run, the resumed one and the reference.

* ``GENRETAG_TEST_KILL_AT_STEP=N``: SIGKILL this process when global step N has been taken.
* ``GENRETAG_TEST_CUT_WRITES_AT_STEP=N``: at global step N, limit the size of any file this
  process writes (RLIMIT_FSIZE) to half the smallest checkpoint so far, so the next checkpoint
  save is cut part-way: the kernel kills the process with SIGXFSZ, as a kill during a save would,
  or, with ``GENRETAG_TEST_IGNORE_SIGXFSZ=1``, the write fails with EFBIG, as on a full disk.
"""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

KILL_AT_STEP = "GENRETAG_TEST_KILL_AT_STEP"
CUT_WRITES_AT_STEP = "GENRETAG_TEST_CUT_WRITES_AT_STEP"
IGNORE_SIGXFSZ = "GENRETAG_TEST_IGNORE_SIGXFSZ"


class Faults(Callback):
    def __init__(self) -> None:
        self.kill_at = int(os.environ.get(KILL_AT_STEP, -1))
        self.cut_at = int(os.environ.get(CUT_WRITES_AT_STEP, -1))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        step = trainer.global_step
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == self.cut_at:
            folders = {
                Path(c.dirpath)
                for c in trainer.checkpoint_callbacks
                if isinstance(c, ModelCheckpoint)
            }
            sizes = [p.stat().st_size for folder in folders for p in folder.glob("*.ckpt")]
            assert sizes, f"no checkpoint yet at step {step} in {folders}"
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            # CPython ignores SIGXFSZ from the start (writes fail with EFBIG); the default
            # action is to kill the process in the write that crosses the limit.
            ignore = bool(os.environ.get(IGNORE_SIGXFSZ))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN if ignore else signal.SIG_DFL)
            limit = min(sizes) // 2
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
