"""TensorBoard beyond scalars: log-mel images, per-label metrics and PR curves, the writer.

Each takes the LightningModule (genretag.task.TaggingTask) whose run it logs to; nothing is
written during the sanity check or off rank 0.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import Tensor


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
