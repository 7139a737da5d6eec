"""TensorBoard beyond scalars: log-mel images, per-label metrics and PR curves, the writer, and
:class:`EmbeddingProjector` (validation embeddings in the projector).

Each takes the LightningModule (genretag.task.TaggingTask) whose run it logs to; nothing is
written during the sanity check or off rank 0.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from genretag.inference import clip_scores

log = logging.getLogger(__name__)


def writer(module: pl.LightningModule) -> Any | None:
    """The SummaryWriter of the run's TensorBoardLogger (None without one, or off rank 0)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    if module.trainer.sanity_checking or not module.trainer.is_global_zero:
        return None
    for logger in module.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def log_spectrograms(module: pl.LightningModule, audio: Tensor) -> None:
    """Log-mel images of up to a few windows (N, T), low frequencies at the bottom."""
    out = writer(module)
    if out is None or len(audio) == 0:
        return
    spec = module.frontend(audio).flip(1)
    lo = spec.amin(dim=(1, 2), keepdim=True)
    hi = spec.amax(dim=(1, 2), keepdim=True)
    images = ((spec - lo) / (hi - lo).clamp(min=1e-6)).unsqueeze(1)
    out.add_images("val/log_mel", images, module.global_step)


def log_per_label(
    module: pl.LightningModule, stage: str, values: Tensor, probs: Tensor, targets: Tensor
) -> None:
    """The head's per-label metric (C,) as one scalar per label; PR curves for genre models."""
    out = writer(module)
    if out is None:
        return
    step, name = module.global_step, module.head.per_label_name
    for label, value in zip(module.labels, values.tolist(), strict=True):
        if value == value:  # not NaN
            out.add_scalar(f"{stage}_{name}_per_label/{label}", value, step)
    if module.head.task == "multilabel":
        for i, label in enumerate(module.labels):
            out.add_pr_curve(
                f"{stage}_pr_curve/{label}", targets[:, i].cpu(), probs[:, i].cpu(), step
            )


# -- projector -----------------------------------------------------------------------
class EmbeddingProjector(pl.Callback):
    """The validation clips' embeddings, labelled, in TensorBoard's projector at the best epoch.

    During validation a forward hook on the trunk keeps each window's pooled features, averaged
    per clip as ``genretag embed`` averages them; when ``monitor`` improves (``mode`` max or min) they
    go to ``writer.add_embedding`` (tag ``val/embedding``) with each clip's label as metadata.
    """

    def __init__(self, monitor: str = "val/map3", mode: str = "max", max_clips: int = 5000):
        self.monitor, self.mode, self.max_clips = monitor, mode, max_clips
        self.best: float | None = None
        self._features: list[Tensor] = []
        self._labels: list[str] = []
        self._captured: Tensor | None = None
        self._hook: Any = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._features, self._labels = [], []

        def keep(module: Any, inputs: Any, output: Tensor) -> None:
            self._captured = output.detach().float()

        self._hook = pl_module.trunk.register_forward_hook(keep)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        features, self._captured = self._captured, None
        if features is None or not batch["key"] or len(self._labels) >= self.max_clips:
            return
        clip = batch.get("clip")
        n = len(batch["key"])
        per_clip = features if clip is None else clip_scores(features, clip, n)
        self._features.append(per_clip.cpu())
        labels = list(pl_module.labels)
        for target in batch["target"].cpu():
            if target.dim() == 0:
                self._labels.append(labels[int(target)])
            else:
                self._labels.append(";".join(labels[i] for i in target.nonzero().flatten()))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or not self._features:
            return
        value = float(value)
        better = self.best is None or (
            value > self.best if self.mode == "max" else value < self.best
        )
        if not better or math.isnan(value):
            return
        self.best = value
        out = writer(pl_module)
        if out is None:
            return
        mat = torch.cat(self._features)
        out.add_embedding(
            mat,
            metadata=self._labels[: len(mat)],
            tag="val/embedding",
            global_step=trainer.global_step,
        )
        log.info(
            "val embeddings of %d clips to TensorBoard's projector (%s=%.4f)",
            len(mat),
            self.monitor,
            value,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
