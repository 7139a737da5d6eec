"""Label spreading over clip embeddings: which unverified labels the verified clips confirm.

    genretag spread-labels --embeddings emb.npy --index emb.csv --out trusted.csv

As NTU's FSDKaggle2018 entry did: scikit-learn's ``LabelSpreading`` (rbf kernel, gamma 20,
alpha 0.2) over the embeddings of the training clips (``genretag embed``), the manually verified
clips labelled, the unverified ones not. The embeddings are L2-normalised first: on the unit
sphere squared distances lie in [0, 4], so gamma 20 gives a kernel that is near 1 for close
clips and vanishes (exp(-20) ~ 2e-9 at distance 1) for unrelated ones, whatever the trunk's
feature scale or width; standardising instead would leave distances growing with D, and
exp(-gamma d^2) would underflow to 0 for every pair. An unverified clip is *trusted* when the
label spread to it equals its given label, with at least ``min_confidence`` of the spread mass.

The output CSV (one row per clip of the index with a given label): clip, label (given),
spread_label, confidence, verified (1/0), trusted (yes/no; yes for every verified clip).
``--data.trusted trusted.csv`` then counts the trusted clips as verified in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from genretag.errors import CommandParser, ConfigError, run_command
from genretag.io import atomic_write

log = logging.getLogger(__name__)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of (N, D) scaled to unit length (a zero row stays zero): (N, D) float64."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def spread(
    embeddings: np.ndarray,
    labels: np.ndarray,
    gamma: float = 20.0,
    alpha: float = 0.2,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Label spreading: (spread label (N,) int64, its share of the spread mass (N,) float64).

    ``embeddings`` (N, D); ``labels`` (N,) int, a class id for a labelled clip, -1 for one to
    label. Needs scikit-learn (``pip install genretag[freesound]``).
    """
    try:
        from sklearn.semi_supervised import LabelSpreading
    except ImportError:
        raise ConfigError(
            "spread-labels needs scikit-learn: pip install 'genretag[freesound]'"
        ) from None
    labels = np.asarray(labels, np.int64)
    if not (labels >= 0).any():
        raise ConfigError("spread-labels: no labelled (verified) clip to spread from")
    model = LabelSpreading(kernel="rbf", gamma=gamma, alpha=alpha, max_iter=max_iter)
    model.fit(l2_normalise(embeddings), labels)
    dist = model.label_distributions_
    best = dist.argmax(1)
    confidence = dist[np.arange(len(dist)), best]
    return model.classes_[best].astype(np.int64), confidence


def trusted_table(
    index: pd.DataFrame,
    embeddings: np.ndarray,
    gamma: float = 20.0,
    alpha: float = 0.2,
    min_confidence: float = 0.0,
) -> pd.DataFrame:
    """The trusted table (see the module docstring) for an embedding index and its array.

    Rows with a given label take part; those with verified = 1 are the labelled ones. Rows
    without a label (test clips) or whose embedding failed (NaN) are left out.
    """
    for column in ("clip", "label", "verified"):
        if column not in index.columns:
            raise ConfigError(f"--index: no column {column!r} (has {', '.join(index.columns)})")
    if len(index) != len(embeddings):
        raise ConfigError(
            f"--index: {len(index)} rows but --embeddings has {len(embeddings)}; "
            f"give the pair genretag embed wrote together"
        )
    label = index["label"].fillna("").astype(str)
    keep = (label != "").to_numpy() & np.isfinite(embeddings).all(1)
    rows, x = index[keep].reset_index(drop=True), embeddings[keep]
    names = sorted(set(label[keep]))
    ids = rows["label"].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
    verified = rows["verified"].fillna("").astype(str).str.strip().isin(["1", "1.0", "True"])
    spread_ids, confidence = spread(x, np.where(verified, ids, -1), gamma, alpha)
    spread_label = np.array(names, dtype=object)[spread_ids]
    agree = (spread_ids == ids) & (confidence >= min_confidence)
    return pd.DataFrame(
        {
            "clip": rows["clip"],
            "label": rows["label"],
            "spread_label": spread_label,
            "confidence": confidence.round(4),
            "verified": verified.astype(int),
            "trusted": np.where(verified | agree, "yes", "no"),
        }
    )


def catch_rate(table: pd.DataFrame, wrong: set[str]) -> dict[str, float]:
    """How well ``trusted = no`` finds the unverified clips whose label is in fact ``wrong``.

    precision: share of the distrusted unverified clips that are wrong; recall: share of the
    wrong ones distrusted. Also the counts.
    """
    unverified = table[table["verified"] == 0]
    flagged = set(unverified["clip"][unverified["trusted"] == "no"])
    bad = wrong & set(unverified["clip"])
    hits = len(flagged & bad)
    return {
        "unverified": len(unverified),
        "wrong": len(bad),
        "flagged": len(flagged),
        "caught": hits,
        "precision": hits / len(flagged) if flagged else float("nan"),
        "recall": hits / len(bad) if bad else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``genretag spread-labels ...``; errors are one line (genretag.errors.run_command)."""
    return run_command("spread-labels", _main, argv)


def _main(argv: list[str]) -> int:
    """``genretag spread-labels ...``; prints a one-line summary."""
    p = CommandParser(prog="genretag spread-labels", description=__doc__.split("\n\n")[0])
    p.add_argument("--embeddings", required=True, type=Path, metavar="X.npy")
    p.add_argument("--index", type=Path, metavar="X.csv", help="default: --embeddings with .csv")
    p.add_argument("--out", required=True, type=Path, metavar="trusted.csv")
    p.add_argument("--gamma", type=float, default=20.0, help="rbf kernel width (20)")
    p.add_argument("--alpha", type=float, default=0.2, help="clamping factor (0.2)")
    p.add_argument(
        "--min-confidence", type=float, default=0.0, metavar="P", help="least spread mass (0)"
    )
    args = p.parse_args(argv)
    index_path = args.index or args.embeddings.with_suffix(".csv")
    try:
        embeddings = np.load(args.embeddings, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--embeddings: {args.embeddings} cannot be read ({error})") from None
    if embeddings.ndim != 2:
        raise ConfigError(f"--embeddings: {args.embeddings} is not an (N, D) array")
    try:
        index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
    except Exception as error:
        raise ConfigError(f"--index: {index_path} cannot be read as CSV ({error})") from None
    table = trusted_table(index, embeddings, args.gamma, args.alpha, args.min_confidence)
    atomic_write(args.out, table.to_csv(index=False), "the trusted list ")
    unverified = table[table["verified"] == 0]
    print(
        f"wrote {args.out}: {int((unverified['trusted'] == 'yes').sum())} of {len(unverified)} "
        f"unverified clips trusted ({int(table['verified'].sum())} verified clips spread from)"
    )
    return 0
