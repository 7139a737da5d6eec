"""The predictor actors: the model loaded once per actor, the one inference path, the choice.

:func:`load` is the one place the cluster path loads checkpoints (driver and actors alike).
An actor imports no Lightning: :func:`genretag.inference.load_predictor` builds plain
:class:`genretag.network.Network` modules (tested in a worker process).

:class:`Tagger` takes a batch of decoded files (rows of :mod:`genretag.cluster.decode`),
scores their windows in batches of ``batch_size`` with :meth:`Predictor.window_probabilities`,
averages (or maxes) each file's windows with :func:`genretag.inference.clip_scores`, merges an
ensemble with :meth:`Predictor.combine` (what ``tag`` computes for a file), and chooses each
file's genres with the output :class:`~genretag.tagger.outputs.Table` of ``tag``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genretag import system
from genretag.inference import (
    Aggregate,
    Combine,
    Predictor,
    clip_scores,
    load_predictor,
)
from genretag.tagger.outputs import Table
from genretag.vocabulary import join

log = logging.getLogger(__name__)


def load(ckpts: Sequence[str], device: torch.device, combine: Combine, precision: str) -> Predictor:
    """THE model load of the cluster path: a Predictor over ``ckpts`` on ``device``, at
    ``precision`` (``auto``: chosen on the machine this runs on, each node its own)."""
    return load_predictor(ckpts, device, combine, precision=system.precision(precision))


@dataclass(frozen=True)
class Scoring:
    """What an actor needs besides the checkpoints: built on the driver, shipped to actors."""

    combine: Combine
    precision: str  # as --precision: auto is resolved on each actor's machine
    aggregate: Aggregate
    batch_size: int | None  # windows per forward pass (None: 8 on CPU, 64 on GPU, as tag)
    threads: int  # torch threads of a CPU actor
    table: Table  # the columns and the genre choice of tag's output table


class Tagger:
    """A Ray Data actor (``map_batches`` callable class): decoded files -> per-file rows."""

    def __init__(self, checkpoints: Sequence[tuple[str, bytes]], scoring: Scoring) -> None:
        """``checkpoints``: (name, file bytes), shipped from the driver, so nodes need no copy
        of ``--ckpt``. On a GPU when Ray gave this actor one, else on the CPU."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cpu":
            torch.set_num_threads(scoring.threads)
            system.keep_freed_memory()  # the actor's process scores until the run ends
        with tempfile.TemporaryDirectory(prefix="genretag-ckpt-") as folder:
            paths = []
            for i, (name, data) in enumerate(checkpoints):
                path = Path(folder, f"{i}-{Path(name).name}")
                path.write_bytes(data)
                paths.append(str(path))
            self.predictor = load(paths, device, scoring.combine, scoring.precision)
        self.scoring = scoring
        self.batch_size = scoring.batch_size or (64 if device.type == "cuda" else 8)
        log.info("predictor actor on %s, %d torch threads", device, torch.get_num_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, object]:
        """Rows with ``windows`` -> rows with ``duration``, ``genres``, ``top1``, ``top1_score``
        ... (the table's columns) and ``scores`` (B, C); "" and zeros for a file that failed."""
        windows = list(batch["windows"])
        counts = np.array([len(w) for w in windows])
        good = set(np.flatnonzero((counts > 0) & (batch["error"] == "")).tolist())
        labels = self.predictor.labels
        scores = np.zeros((len(windows), len(labels)), np.float32)
        if good:
            order = sorted(good)
            scores[order] = self._scores([windows[i] for i in order])
        table = self.scoring.table
        out: dict[str, object] = {
            "path": batch["path"],
            "size": batch["size"],
            "mtime_ns": batch["mtime_ns"],
            "duration": batch["samples"] / self.predictor.sample_rate,
            "error": batch["error"],
            "truncated": batch["truncated"],
            "genres": np.array(["" if i not in good else join(table.choose(s)) for i, s in
                                enumerate(scores)], dtype=object),
        }  # fmt: skip
        tops = [table.select(s) if i in good else [] for i, s in enumerate(scores)]
        for j in range(table.top_k):
            out[f"top{j + 1}"] = np.array([t[j][0] if j < len(t) else "" for t in tops], object)
            out[f"top{j + 1}_score"] = np.array(
                [t[j][1] if j < len(t) else 0.0 for t in tops], np.float32
            )
        out["scores"] = scores
        return out

    def _scores(self, files: list[np.ndarray]) -> np.ndarray:
        """Windows (W_i, T) of each file -> the files' scores (B, C), as tag computes them."""
        clip = torch.from_numpy(np.repeat(np.arange(len(files)), [len(w) for w in files]))
        probs = torch.cat([p.cpu() for p in self._window_probabilities(files)], dim=1)  # (M,N,C)
        per_model = clip_scores(probs, clip, len(files), self.scoring.aggregate)
        return self.predictor.combine(per_model).numpy()

    def _window_probabilities(self, files: list[np.ndarray]) -> Iterator[torch.Tensor]:
        """(M, n, C) for each run of ``batch_size`` windows, in order, across file boundaries."""
        pending: list[np.ndarray] = []
        for windows in files:
            for window in windows:
                pending.append(window)
                if len(pending) == self.batch_size:
                    yield self.predictor.window_probabilities(torch.from_numpy(np.stack(pending)))
                    pending = []
        if pending:
            yield self.predictor.window_probabilities(torch.from_numpy(np.stack(pending)))
