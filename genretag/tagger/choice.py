"""What a run decides and says for its files: the output table with the genre choice of the
command line (``--genre-map``, ``--with-parents``, ``--max-genres``, ``--min-score``,
``--threshold``), and the summary line at the end. Shared by ``tag`` and its Ray engine
(genretag.cluster), so both write the same genres and say the same.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from genretag import vocabulary
from genretag.errors import ConfigError
from genretag.inference import Predictor
from genretag.tagger.outputs import Table, sibling


@dataclass
class Summary:
    """Counts of a run, and the line that reports them (:meth:`line`)."""

    known: int = 0
    tagged: int = 0
    failed: int = 0
    seconds: float = 0.0
    changed: int = 0
    truncated: int = 0
    dry_run: bool = False
    start: float = field(default_factory=time.monotonic)

    def line(self, out: Path | None) -> str:
        wall = time.monotonic() - self.start
        speed = self.seconds / max(wall, 1e-9)
        text = f"tagged {self.tagged} files ({self.seconds / 3600:.2f} h of audio) in {wall:.1f} s"
        text += f" ({speed:.0f}x realtime)"
        text += f", {self.known} already done" if self.known else ""
        if self.changed:
            text += f", {self.changed} genre tags {'to change (dry run)' if self.dry_run else 'written'}"
        where = f" (see {sibling(out, '.errors.csv')})" if out else ""
        if self.truncated:
            text += f", {self.truncated} truncated (tagged from what decodes{where})"
        if self.failed:
            text += f"; {self.failed} FAILED{where}"
        return text


def table(predictor: Predictor, args: argparse.Namespace, fmt: str) -> Table:
    """The output table, with the genre choice of --genre-map/--with-parents/--max/--min."""
    floor: float | dict[str, float] = 0.0 if args.threshold == "auto" else args.threshold
    if args.threshold == "auto":
        if predictor.task != "multilabel":
            raise ConfigError("--threshold auto: per-genre thresholds exist for genre models only")
        floor = dict(zip(predictor.labels, predictor.thresholds.tolist(), strict=True))
    choose = vocabulary.genre_choice(
        predictor.labels,
        predictor.genre_tree,
        max_genres=args.max_genres or args.top_k,
        min_score=floor if args.min_score is None else args.min_score,
        genre_map=args.genre_map,
        with_parents=args.with_parents,
        default_map=predictor.genre_map,
    )
    top_floor = 0.0 if args.threshold == "auto" else args.threshold
    return Table(predictor.labels, args.top_k, top_floor, fmt, choose)
