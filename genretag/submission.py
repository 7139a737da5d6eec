"""A Kaggle submission from ``predict``: ``fname,label`` with the top 3 labels, best first.

Wired as a callback in configs/freesound.yaml, so

    python -m genretag predict --config configs/freesound.yaml --ckpt_path best.ckpt

writes ``submission.csv`` into the run's log folder (``lightning_logs/version_N/``; the current
folder when the run has no logger), or where ``output`` says. The format is Kaggle's
sample_submission.csv for the Freesound General-Purpose Audio Tagging Challenge::

    fname,label
    00063640.wav,Laughter Hi-hat Flute

Labels are ranked by the model's probabilities, ties broken by class order, exactly as
genretag.metrics.map_at_k ranks them, so the file scores what ``test/map3`` reports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from genretag.io import atomic_write
from genretag.metrics import top_k

log = logging.getLogger(__name__)


class SubmissionWriter(BasePredictionWriter):
    """Collects ``predict_step`` outputs ({"key": [B], "probs": (B, C)}) and writes one CSV."""

    def __init__(self, output: str | None = None, top: int = 3) -> None:
        """
        Args:
            output: the CSV to write; default ``submission.csv`` in the run's log folder
                (``trainer.log_dir``), or in the current folder when there is none.
            top: labels per clip (Kaggle scores up to 3).
        """
        super().__init__(write_interval="batch")
        self.output, self.top = output, top
        self._rows: list[tuple[str, str]] = []
        self.path: Path | None = None  # where the last run wrote

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        labels: list[str] = list(pl_module.labels)
        best = top_k(prediction["probs"], self.top).tolist()  # (B, top) class ids
        for key, ids in zip(prediction["key"], best, strict=True):
            self._rows.append((str(key), " ".join(labels[i] for i in ids)))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self._rows
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[list[tuple[str, str]]] = [[] for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        if not trainer.is_global_zero:
            return
        self.path = self._resolve(trainer)
        # A distributed sampler repeats clips to even out the ranks: keep each file once.
        table = pd.DataFrame(rows, columns=["fname", "label"]).drop_duplicates("fname")
        atomic_write(self.path, table.to_csv(index=False))
        log.info("wrote %d predictions (top %d labels each) to %s", len(table), self.top, self.path)

    def _resolve(self, trainer: pl.Trainer) -> Path:
        if self.output is not None:
            return Path(self.output)
        folder = trainer.log_dir
        return Path(folder if folder is not None else ".") / "submission.csv"
