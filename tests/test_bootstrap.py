"""Bootstrap intervals of macro ROC-AUC / PR-AUC: exact where they must be, as wide as theory says."""

from __future__ import annotations

import math

import pytest
import torch

from genretag.metrics import bootstrap_intervals, multilabel_scores, weighted_macro_aucs


def _scores(n: int, labels: int, seed: int, signal: float = 0.5, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, labels, generator=g) < 0.3).float()
    probs = torch.rand(n, labels, generator=g) + signal * targets
    return (probs.round(decimals=1) if ties else probs), targets


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
def test_weighted_scores_equal_multilabel_scores_on_a_resample(ties: bool) -> None:
    probs, targets = _scores(300, 5, seed=1, ties=ties)
    targets[:, 4] = 0  # a label with no positive is left out of both macro averages
    picks = torch.randint(300, (300,), generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(picks, minlength=300).unsqueeze(0)
    roc, pr = weighted_macro_aucs(probs, targets, torch.cat([torch.ones_like(counts), counts]))
    for row, (p, t) in enumerate([(probs, targets), (probs[picks], targets[picks])]):
        expected = multilabel_scores(p, t)
        assert roc[row].item() == pytest.approx(expected["roc_auc"].item(), abs=1e-6)
        assert pr[row].item() == pytest.approx(expected["pr_auc"].item(), abs=1e-6)


def test_perfect_scores_give_one() -> None:
    targets = (torch.rand(200, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    intervals = bootstrap_intervals(targets * 0.8 + 0.1, targets, draws=200)
    assert intervals == {"roc_auc": (1.0, 1.0), "pr_auc": (1.0, 1.0)}


def test_random_scores_width_matches_hanley_mcneil() -> None:
    probs, targets = _scores(3000, 1, seed=3, signal=0.0)
    lo, hi = bootstrap_intervals(probs, targets, draws=1000, seed=0)["roc_auc"]
    assert lo < 0.5 < hi
    # Hanley & McNeil (1982): SE^2 = (A(1-A) + (n1-1)(Q1-A^2) + (n2-1)(Q2-A^2)) / (n1 n2).
    a, n1 = 0.5, int(targets.sum())
    n2 = len(targets) - n1
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2))
    assert (hi - lo) == pytest.approx(2 * 1.959964 * se, rel=0.25)


def test_same_seed_same_interval_other_seed_other() -> None:
    probs, targets = _scores(400, 8, seed=4)
    first = bootstrap_intervals(probs, targets, draws=300, seed=7)
    assert bootstrap_intervals(probs, targets, draws=300, seed=7) == first
    assert bootstrap_intervals(probs, targets, draws=300, seed=8) != first
    point = multilabel_scores(probs, targets)
    for name in ("roc_auc", "pr_auc"):
        lo, hi = first[name]
        assert lo < point[name].item() < hi


def test_no_defined_label_gives_nan() -> None:
    lo, hi = bootstrap_intervals(torch.rand(50, 3), torch.zeros(50, 3), draws=20)["roc_auc"]
    assert math.isnan(lo) and math.isnan(hi)
