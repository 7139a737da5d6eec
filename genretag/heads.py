"""One head per task: its output layer, loss, probability function and metrics.

The task is chosen once, when the network is built (:func:`make_head`), and the head holds what
differs in training and scoring:

* :class:`MultiLabelHead` (FMA genres): sigmoid probabilities, binary cross-entropy, macro
  ROC-AUC / PR-AUC / F1; targets (B, C) float multi-hot.
* :class:`MultiClassHead` (Freesound): softmax probabilities, cross-entropy with optional label
  smoothing, mAP@3 / accuracy; targets (B,) long class ids.

Both are ``nn.Sequential(Dropout, Linear)``, so checkpoints keep the keys ``head.1.weight`` and
``head.1.bias`` whatever the task. A few outputs exist for one task only and are chosen by name
where they are made: per-genre F1 thresholds and bootstrap intervals (genres; genretag.task,
``tag --threshold auto``), SRT captions and the renormalised geometric ensemble (Freesound;
genretag.tagger, genretag.inference).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Task = Literal["multilabel", "multiclass"]


class Head(nn.Sequential):
    """Pooled features (B, D) -> logits (B, C); the task-specific parts are the methods below."""

    task: Task
    monitor: str  # the validation metric that picks the best epoch and TensorBoard's hp_metric
    per_label_name: str  # the per-label metric logged to TensorBoard

    def __init__(self, in_features: int, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, n_labels))
        self.n_labels = n_labels

    def probabilities(self, logits: Tensor) -> Tensor:
        """Logits (B, C) -> probabilities (B, C) float32."""
        raise NotImplementedError

    def loss(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Training loss of logits (B, C) against targets, optionally weighted per clip (B,)."""
        per_clip = self._per_clip_loss(logits.float(), target)
        if weight is None:
            return per_clip.mean()
        return (per_clip * weight).sum() / weight.sum().clamp(min=1e-8)

    def _per_clip_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def soft_target(self, target: Tensor) -> Tensor:
        """Targets as (B, C) floats, the form mixup interpolates."""
        return target

    def eval_loss(self, probs: Tensor, target: Tensor) -> Tensor:
        """The loss of clip probabilities (B, C) (window probabilities averaged per clip)."""
        raise NotImplementedError

    def scores(self, probs: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """(macro metrics by name, the per-label metric (C,), NaN where undefined)."""
        raise NotImplementedError


class MultiLabelHead(Head):
    task = "multilabel"
    monitor = "roc_auc"
    per_label_name = "roc_auc"

    def __init__(
        self, in_features: int, n_labels: int, dropout: float = 0.1, threshold: float = 0.5
    ) -> None:
        super().__init__(in_features, n_labels, dropout)
        self.threshold = threshold

    def probabilities(self, logits: Tensor) -> Tensor:
        return logits.float().sigmoid()

    def _per_clip_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)

    def eval_loss(self, probs: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target)

    def scores(self, probs: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        from genretag.metrics import multilabel_scores  # torchmetrics: evaluation only

        scores = multilabel_scores(probs, targets, self.threshold)
        return scores, scores.pop("roc_auc_per_label")


class MultiClassHead(Head):
    task = "multiclass"
    monitor = "map3"
    per_label_name = "accuracy"

    def __init__(
        self, in_features: int, n_labels: int, dropout: float = 0.1, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(in_features, n_labels, dropout)
        self.label_smoothing = label_smoothing

    def probabilities(self, logits: Tensor) -> Tensor:
        return logits.float().softmax(dim=-1)

    def _per_clip_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        # class ids (B,), or class probabilities (B, C) after mixup
        return F.cross_entropy(
            logits, target, reduction="none", label_smoothing=self.label_smoothing
        )

    def soft_target(self, target: Tensor) -> Tensor:
        return F.one_hot(target, self.n_labels).float()

    def eval_loss(self, probs: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(probs.clamp(min=1e-7).log(), target)

    def scores(self, probs: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        from genretag.metrics import multiclass_scores  # torchmetrics: evaluation only

        scores = multiclass_scores(probs, targets)
        return scores, scores.pop("accuracy_per_class")


def make_head(
    task: Task,
    in_features: int,
    n_labels: int,
    dropout: float = 0.1,
    threshold: float = 0.5,
    label_smoothing: float = 0.0,
) -> Head:
    """The head of ``task``; the one place that turns the task's name into behaviour."""
    if task == "multiclass":
        return MultiClassHead(in_features, n_labels, dropout, label_smoothing)
    return MultiLabelHead(in_features, n_labels, dropout, threshold)
