"""Checkpoints that survive a kill: atomic writes, the random state, ``--ckpt_path last``.

* :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file next to it, fsyncs it
  and renames it into place, so a kill or a full disk during a save leaves the previous file
  whole. (Lightning's own writer puts the temporary file in ``$TMPDIR``: where that is another
  file system, as a tmpfs /tmp is, the final move is a copy that a kill can cut short, and a kill
  during the write leaves a checkpoint-sized file in ``$TMPDIR`` for good.)
* :class:`RandomState` stores the global random generators (torch, NumPy, Python) in every
  checkpoint and restores them when training resumes, so a resumed seeded run draws the same
  shuffles, crops and dropout masks as one that was never interrupted.
* :func:`resolve_last` finds the newest ``last.ckpt`` of the earlier runs under the run's root:
  each run logs to a new ``lightning_logs/version_N``, where Lightning alone looks for it.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from genretag.checkpoint import plain
from genretag.io import atomic_write

log = logging.getLogger(__name__)

# last.ckpt, last-v1.ckpt ... (ModelCheckpoint adds -vN when the name is taken)
LAST = re.compile(r"^last(-(\d+))?\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints are written to ``.NAME.PID.tmp`` beside the target, fsynced, then renamed.

    A reader sees the old file or the new one, never a part: a kill leaves at most the temporary
    file, removed by the next save to the same path; a failed write (``ENOSPC``, ``EFBIG``) removes
    it and raises OSError naming the checkpoint. Remote paths (``s3://`` ...) go to Lightning.
    Paths among the hyper-parameters are written as strings, so that every checkpoint loads with
    :func:`genretag.checkpoint.load_checkpoint` (plain data only).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if "hyper_parameters" in checkpoint:  # paths as strings: the file loads as plain data
            checkpoint = {**checkpoint, "hyper_parameters": plain(checkpoint["hyper_parameters"])}
        atomic_write(path, lambda f: _save(checkpoint, f), what="the checkpoint ")


def _save(checkpoint: dict[str, Any], file: Any) -> None:
    """``torch.save`` into memory, then one write: torch's own writer reports a short write (a
    full disk) as a RuntimeError of its own, a plain write as the OSError it is."""
    data = io.BytesIO()
    torch.save(checkpoint, data)
    file.write(data.getbuffer())


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Give the trainer's strategy an AtomicCheckpointIO unless one was configured."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


class RandomState(Callback):
    """Saves the global random state with each checkpoint; restores it when training resumes.

    Restored as soon as Lightning hands the state back, before the first training batch of the
    resumed run is drawn (the sanity check runs under ``isolate_rng``): the state an uninterrupted
    run had right after saving that checkpoint: the model's own draws (dropout, mixup,
    SpecAugment). The crops and the shuffled order do not depend on it, or on the loader's
    workers: each is seeded from (seed, epoch, index) (genretag.data.datasets.EpochSampler).
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
        # plain types only (str, tensor, int, float): loads with torch.load(weights_only=True)
        numpy_state = (str(kind), torch.from_numpy(keys.astype(np.int64)), int(position))
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (*numpy_state, int(has_gauss), float(gauss)),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        kind, keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(state_dict["python"])
        cuda = state_dict.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _last_checkpoints(trainer: pl.Trainer) -> tuple[list[Path], list[Path]]:
    """(last*.ckpt files, folders searched) for this trainer's checkpoint callbacks and logger."""
    folders = [
        Path(callback.dirpath)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath
    ]
    if trainer.logger is not None and trainer.logger.root_dir:
        root = Path(trainer.logger.root_dir)
        folders += sorted(root.glob("version_*/checkpoints"))
        searched = [*folders, root / "version_*" / "checkpoints"]
    else:
        folders.append(Path(trainer.default_root_dir) / "checkpoints")
        searched = folders
    found = [
        p for folder in folders if folder.is_dir() for p in folder.iterdir() if LAST.match(p.name)
    ]
    return found, searched


def resolve_last(trainer: pl.Trainer) -> str | None:
    """``--ckpt_path last`` -> the newest last checkpoint of any earlier run, or None (no resume).

    Looks in the checkpoint callbacks' fixed ``dirpath`` and in every
    ``<logger root>/version_*/checkpoints`` (``<default_root_dir>/checkpoints`` without a logger),
    and logs which file it picked.
    """
    found, searched = _last_checkpoints(trainer)
    if not found:
        log.warning(
            "--ckpt_path last: no last checkpoint in %s; starting from scratch",
            ", ".join(map(str, searched)),
        )
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime_ns)
    log.info("--ckpt_path last: resuming from %s (newest of %d)", newest, len(found))
    return str(newest)
