"""Clip-level scores: what torchmetrics lacks (mAP@3, macro averages over defined labels).

Predictions are collected over a whole evaluation set (synchronised across processes under DDP,
so ROC-AUC is computed once on all clips, never averaged per rank) and scored at epoch end.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multiclass_auroc,
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_f1_score,
)
from torchmetrics.utilities import dim_zero_cat


class ClipPredictions(Metric):
    """Accumulates clip probabilities (N, C) and targets ((N, C) multi-hot or (N,) class ids)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, targets: Tensor) -> None:
        self.probs.append(probs.detach().float())
        self.targets.append(targets.detach())

    def compute(self) -> tuple[Tensor, Tensor]:
        return dim_zero_cat(self.probs), dim_zero_cat(self.targets)


def top_k(probs: Tensor, k: int = 3) -> Tensor:
    """Class ids of the k highest scores per row, best first: (N, C) -> (N, min(k, C)).

    Ties are ranked by class index (the lower index first) on every device; ``torch.topk``
    gives no such guarantee (it returns tied indices in arbitrary order), so a stable sort.
    """
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices
    return order[:, : min(k, probs.shape[1])]


def map_at_k(probs: Tensor, target: Tensor, k: int = 3) -> Tensor:
    """Mean average precision at k for one true label per clip (the DCASE 2018 Task 2 metric).

    probs (N, C), target (N,) class ids. A clip scores 1/rank when its label is among the top k,
    else 0. Ties are ranked by class index (the lower index first), see :func:`top_k`.
    """
    top = top_k(probs, k)  # (N, k)
    hits = top == target.view(-1, 1)
    ranks = torch.arange(1, top.shape[1] + 1, device=probs.device, dtype=torch.float32)
    return (hits.float() / ranks).sum(dim=1).mean()


def multilabel_scores(probs: Tensor, targets: Tensor, threshold: float = 0.5) -> dict[str, Tensor]:
    """Macro ROC-AUC, PR-AUC (average precision) and F1 over labels with positives and negatives.

    probs, targets: (N, C). A label with no positive (or no negative) clip in the set has no
    defined AUC and is left out of the macro averages rather than counted as 0. Also returns the
    per-label ROC-AUC as ``roc_auc_per_label`` (C,), NaN where undefined.
    """
    targets = targets.round().long()
    positives = targets.sum(dim=0)
    defined = (positives > 0) & (positives < targets.shape[0])
    per_label = torch.full((probs.shape[1],), float("nan"), device=probs.device)
    if not bool(defined.any()):
        nan = torch.tensor(float("nan"), device=probs.device)
        return {"roc_auc": nan, "pr_auc": nan, "f1": nan, "roc_auc_per_label": per_label}
    p, t = probs[:, defined], targets[:, defined]
    n = int(defined.sum())
    per_label[defined] = multilabel_auroc(p, t, num_labels=n, average="none")
    return {
        "roc_auc": per_label[defined].mean(),
        "pr_auc": multilabel_average_precision(p, t, num_labels=n, average="macro"),
        "f1": multilabel_f1_score(p, t, num_labels=n, threshold=threshold, average="macro"),
        "roc_auc_per_label": per_label,
    }


def multiclass_scores(probs: Tensor, target: Tensor) -> dict[str, Tensor]:
    """mAP@3, accuracy, macro one-vs-rest ROC-AUC and per-class accuracy for (N, C), (N,)."""
    num_classes = probs.shape[1]
    correct = probs.argmax(dim=1) == target
    counts = torch.bincount(target, minlength=num_classes).float()
    hits = torch.bincount(target[correct], minlength=num_classes).float()
    present = counts > 0
    auroc = torch.tensor(float("nan"), device=probs.device)
    if int(present.sum()) > 1:
        auroc = multiclass_auroc(probs, target, num_classes=num_classes, average="none")[
            present
        ].mean()
    return {
        "map3": map_at_k(probs, target, 3),
        "accuracy": correct.float().mean(),
        "roc_auc": auroc,
        "accuracy_per_class": torch.where(present, hits / counts.clamp(min=1), torch.nan),
    }
