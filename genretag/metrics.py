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


# -- bootstrap intervals -------------------------------------------------------------------------
def bootstrap_intervals(
    probs: Tensor, targets: Tensor, draws: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of macro ROC-AUC and PR-AUC: ``{"roc_auc": (lo, hi), ...}``.

    probs, targets: (N, C). Each of ``draws`` resamples takes N tracks with replacement (seeded:
    the same seed gives the same interval) and scores them with the rule of
    :func:`multilabel_scores` (macro over the labels that have both positives and negatives in
    that resample). Vectorised: a resample is a (draws, N) count of each track, and both AUCs are
    weighted sums over each label's sorted scores, so 1000 draws of 800 x 16 take well under 1 s.
    (NaN, NaN) when no resample has a defined label.
    """
    n = probs.shape[0]
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(n, (draws, n), generator=generator)
    counts = torch.zeros(draws, n, dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(draws, n, dtype=torch.float64)
    )
    roc, pr = weighted_macro_aucs(probs.cpu(), targets.cpu(), counts)
    alpha = (1.0 - level) / 2
    out = {}
    for name, values in (("roc_auc", roc), ("pr_auc", pr)):
        values = values[~values.isnan()]
        if len(values) == 0:
            out[name] = (float("nan"), float("nan"))
            continue
        q = torch.quantile(values, torch.tensor([alpha, 1.0 - alpha], dtype=values.dtype))
        out[name] = (float(q[0]), float(q[1]))
    return out


def weighted_macro_aucs(probs: Tensor, targets: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Macro ROC-AUC and average precision of (N, C) scores under (D, N) track weights: (D,), (D,).

    With integer weights (counts of each track in a resample) this equals
    :func:`multilabel_scores` on the resampled set (tied scores count one half for ROC-AUC and
    form one threshold for average precision, as in torchmetrics). NaN where no label is defined.
    """
    targets = targets.round().bool()
    # Tracks along rows, draws along columns: gathers and cumsums then move whole rows. float32:
    # counts and their partial sums are exact integers, and the AUCs good to ~1e-6.
    weights_t = weights.to(torch.float32).t().contiguous()  # (N, D)
    roc_sum = torch.zeros(weights.shape[0], dtype=torch.float64)
    pr_sum = torch.zeros_like(roc_sum)
    defined = torch.zeros_like(roc_sum)
    for c in range(probs.shape[1]):
        order = torch.argsort(probs[:, c].double(), descending=True, stable=True)
        scores, positive = probs[order, c].double(), targets[order, c].unsqueeze(1)
        w = weights_t[order]  # (N, D), best score first
        pos_w = w * positive
        cum_tp, cum_all = torch.cumsum(pos_w, 0), torch.cumsum(w, 0)
        ends = torch.nonzero(scores[1:] != scores[:-1]).squeeze(1)
        if len(ends) < len(scores) - 1:  # ties: one threshold per group of equal scores
            ends = torch.cat([ends, torch.tensor([len(scores) - 1])])
            cum_tp, cum_all = cum_tp[ends], cum_all[ends]  # (G, D)
            tp = torch.diff(cum_tp, dim=0, prepend=torch.zeros_like(cum_tp[:1]))
            tied = torch.diff(cum_all, dim=0, prepend=torch.zeros_like(cum_all[:1]))
        else:
            tp, tied = pos_w, w
        n_pos, n_all = cum_tp[-1], cum_all[-1]
        n_neg = n_all - n_pos
        ok = (n_pos > 0) & (n_neg > 0)
        # ROC-AUC: a positive beats the negatives after its group and half of those in it;
        # the negatives before the middle of group g: (cum_all - cum_tp) - (tied - tp) / 2.
        ahead = (cum_all - cum_tp).sub_(tied - tp, alpha=0.5)  # (G, D)
        roc = (n_pos * n_neg - (tp * ahead).sum(0)) / (n_pos * n_neg).clamp(min=1)
        # Average precision: sum over thresholds of (recall step) x (precision there).
        ap = (tp * cum_tp / cum_all.clamp(min=1e-12)).sum(0) / n_pos.clamp(min=1)
        roc_sum += torch.where(ok, roc, 0.0).double()
        pr_sum += torch.where(ok, ap, 0.0).double()
        defined += ok
    nan = torch.full_like(roc_sum, float("nan"))
    has = defined > 0
    return (
        torch.where(has, roc_sum / defined.clamp(min=1), nan),
        torch.where(has, pr_sum / defined.clamp(min=1), nan),
    )


def best_f1_thresholds(probs: Tensor, targets: Tensor, default: float = 0.5) -> Tensor:
    """Per label, the probability threshold that maximises F1 on (N, C) scores: (C,).

    Candidates are the scores themselves (predict a label when its score >= the threshold); a
    label with no positive clip keeps ``default``. Ties keep the highest threshold (the fewest
    false positives).
    """
    targets = targets.round().bool()
    out = torch.full((probs.shape[1],), default, dtype=torch.float32)
    for c in range(probs.shape[1]):
        positives = int(targets[:, c].sum())
        if positives == 0:
            continue
        order = torch.sort(probs[:, c], descending=True, stable=True)
        hits = targets[order.indices, c].float().cumsum(0)  # true positives at each cut
        predicted = torch.arange(1, len(hits) + 1, dtype=torch.float32)
        f1 = 2 * hits / (predicted + positives)
        # only cut between distinct scores: the last index of each run of equal scores
        distinct = torch.ones_like(f1, dtype=torch.bool)
        distinct[:-1] = order.values[:-1] != order.values[1:]
        f1 = torch.where(distinct, f1, torch.tensor(-1.0))
        best = int(torch.argmax(f1))
        out[c] = float(order.values[best])
    return out
