"""The tables ``genretag tag`` writes: resumable, appended whole lines at a time.

One row per file in a CSV (a header, then one line per file) or JSON lines, appended with
flush + fsync, so a reader (pandas) always sees whole rows and a killed run leaves at most one
partial last line, which the next run cuts. Rows are keyed by path (as the user reached the
file, :func:`genretag.tagger.scan.display_path`), size and mtime; a re-run skips the files whose
key is there and finally compacts the table to the last row of each file. Beside the table:
``<stem>.errors.csv`` (this run's failures and truncated files), ``<stem>.segments.jsonl``
(window timelines), ``<stem>.srt/`` and the embeddings (genretag.tagger.embeddings).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from genretag.errors import ConfigError
from genretag.io import Key, atomic_write, exclusive, file_key
from genretag.tagger import embeddings as emb
from genretag.tagger.captions import write_srt
from genretag.tagger.scan import real_path
from genretag.vocabulary import join

log = logging.getLogger(__name__)

FIXED_COLUMNS = ["path", "duration", "size", "mtime_ns"]
TRUNCATED = "truncated:"  # how an errors.csv line of a truncated (but tagged) file begins


def truncation_note(got: int, want: int, rate: int) -> str:
    """The errors-table reason of a file that decodes to ``got`` of the ``want`` samples its
    header declares, at ``rate`` Hz, and was tagged all the same (``tag`` and its Ray engine)."""
    return (
        f"{TRUNCATED} decodes to {got / rate:.2f} s but its header declares "
        f"{want / rate:.2f} s; tagged from what decodes"
    )


class Table:
    """One row per file, as a CSV line or a JSON line, for one label set.

    Columns: path, duration, size, mtime_ns; ``genres``, the genres chosen for the file (what
    ``--write-tags`` writes, "; "-separated; ``choose``, by default the top-k above the
    threshold); the model's own top-k labels and scores; then one score column per label.
    """

    def __init__(
        self,
        labels: list[str],
        top_k: int,
        threshold: float,
        fmt: str,
        choose: Callable[[np.ndarray], list[tuple[str, float]]] | None = None,
    ) -> None:
        self.labels, self.top_k, self.threshold, self.fmt = labels, top_k, threshold, fmt
        self.choose = choose or self.select
        tops = [c for i in range(1, top_k + 1) for c in (f"top{i}", f"top{i}_score")]
        self.columns = FIXED_COLUMNS + ["genres"] + tops + labels
        self.header = _csv_line(self.columns) if fmt == "csv" else None

    def select(self, scores: np.ndarray) -> list[tuple[str, float]]:
        """Up to top_k (label, score), best first, with score >= threshold."""
        best = np.argsort(-scores, kind="stable")[: self.top_k]
        return [(self.labels[i], float(scores[i])) for i in best if scores[i] >= self.threshold]

    def line(self, path: Path, key: Key, duration: float, scores: np.ndarray) -> str:
        top = self.select(scores)
        if self.fmt == "jsonl":
            row = {
                "path": str(path),
                "duration": round(duration, 3),
                "size": key[0],
                "mtime_ns": key[1],
            }
            row["genres"] = [
                {"label": name, "score": round(s, 5)} for name, s in self.choose(scores)
            ]
            row["top"] = [{"label": label, "score": round(s, 5)} for label, s in top]
            row["scores"] = {
                label: round(float(s), 5) for label, s in zip(self.labels, scores, strict=True)
            }
            return json.dumps(row, ensure_ascii=False) + "\n"
        cells: list[Any] = [path, f"{duration:.3f}", *key, join(self.choose(scores))]
        for i in range(self.top_k):
            cells += [top[i][0], f"{top[i][1]:.5f}"] if i < len(top) else ["", ""]
        return _csv_line(cells + [f"{s:.5f}" for s in scores])

    def parse(self, line: str) -> tuple[str, Key, dict | list] | None:
        """(path, key, parsed row) of one line; None (and a warning) for a damaged line."""
        if self.fmt == "jsonl":
            return _parse_json(line)
        try:
            row = next(csv.reader([line]))
            return row[0], (int(row[2]), int(row[3])), row
        except (ValueError, IndexError, StopIteration, csv.Error):
            log.warning("ignored a damaged row: %.80s", line)
            return None

    def scores(self, row: dict | list) -> np.ndarray:
        if isinstance(row, dict):
            return np.array([row["scores"][label] for label in self.labels], np.float32)
        return np.array(row[-len(self.labels) :], np.float32)

    def rekey(self, row: dict | list, key: Key) -> str:
        if isinstance(row, dict):
            return (
                json.dumps({**row, "size": key[0], "mtime_ns": key[1]}, ensure_ascii=False) + "\n"
            )
        return _csv_line([row[0], row[1], *key, *row[4:]])

    def check(self, path: Path, first: str) -> None:
        """ConfigError unless ``first`` (the header, or the first JSON row) fits these labels."""
        try:
            fits = (
                first == self.header
                if self.fmt == "csv"
                else set(json.loads(first)["scores"]) == set(self.labels)
            )
        except (ValueError, KeyError, TypeError):
            fits = False
        if not fits:
            raise ConfigError(
                f"{path} holds rows for other labels or another --top-k; resume with the same "
                f"--ckpt and --top-k, or choose another --out"
            )


def _csv_cells(line: str) -> list[str]:
    cells = next(csv.reader([line]), [])
    return cells if len(cells) >= 2 else [*cells, "", ""]


def _csv_line(cells: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


def _parse_json(line: str) -> tuple[str, Key, dict] | None:
    try:
        row = json.loads(line)
        return row["path"], (int(row["size"]), int(row["mtime_ns"])), row
    except (ValueError, KeyError, TypeError):
        log.warning("ignored a damaged row: %.80s", line)
        return None


def _lines(path: Path, header: bool) -> Iterator[str]:
    """Whole lines of ``path`` (none if missing), without a header; a partial last line is dropped."""
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle):
            if raw.endswith(b"\n") and raw.strip() and not (header and number == 0):
                yield raw.decode("utf-8", "surrogateescape")


def _trim_partial(path: Path) -> None:
    """Cut a partial last line (a write killed half-way) so that appends start on a fresh line."""
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        if end != size:
            handle.truncate(end)


class _Appender:
    """An output file opened for appending whole lines: write + flush + fsync per call."""

    def __init__(self, path: Path, header: str | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.failed = path, False
        self.handle = open(path, "ab")  # noqa: SIM115 (closed by close())
        _trim_partial(path)
        if header and os.fstat(self.handle.fileno()).st_size == 0:
            self.write([header])

    def write(self, lines: Sequence[str]) -> None:
        if lines:
            try:
                self.handle.write("".join(lines).encode("utf-8", "surrogateescape"))
                self.handle.flush()
                os.fsync(self.handle.fileno())
            except OSError as error:  # a full disk: name the file (the CLI prints one line)
                self.failed = True
                raise OSError(
                    error.errno,
                    f"could not write {self.path} ({error.strerror}); the lines before are kept, "
                    f"run the same command again when there is room",
                ) from error

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError:
            if not self.failed:  # else: the rest of the failed write, reported already
                raise


def sibling(path: Path, tail: str) -> Path:
    return path.with_name(path.stem + tail)


class Outputs:
    """The files a run writes next to ``--out``: rows, segment timelines, SRT captions, errors,
    embeddings. Rows already written are loaded first, so a re-run after a crash skips the files
    that are done.
    """

    def __init__(
        self,
        out: Path,
        table: Table,
        segments: bool,
        srt: bool,
        embeddings: bool = False,
    ) -> None:
        if out.suffix.lower() not in (".csv", ".jsonl"):
            raise ConfigError(f"--out {out}: use a .csv or a .jsonl file name")
        self.out, self.table, self.segments, self.srt = out, table, segments, srt
        self.srt_dir = sibling(out, ".srt")
        self.embeddings = embeddings
        self.rows = self.timelines = self.errors = self.lock = self.vectors = None

    def rows_in(self) -> Iterator[tuple[str, Key, dict | list]]:
        """Every whole row of --out, oldest first (ConfigError if it has other columns)."""
        for number, line in enumerate(_lines(self.out, header=False)):
            if number == 0:
                self.table.check(self.out, line)
                if self.table.fmt == "csv":
                    continue
            parsed = self.table.parse(line)
            if parsed is not None:
                yield parsed

    def done(self) -> dict[str, Key]:
        """The key of the latest row of each path already written (with ``embeddings``: of
        each path that has an embedding too)."""
        done = {path: key for path, key, _ in self.rows_in()}
        if self.embeddings:
            have = emb.paths(_lines(sibling(self.out, emb.LOG_TAIL), False))
            done = {path: key for path, key in done.items() if path in have}
        return done

    def open(self) -> None:
        """Lock this run's files, cut torn last lines, and start a new errors file."""
        self.lock = ExitStack()
        self.lock.enter_context(
            exclusive(self.out.with_name(f".{self.out.name}.lock"), str(self.out))
        )
        self.rows = _Appender(self.out, self.table.header)
        self.timelines = (
            _Appender(sibling(self.out, ".segments.jsonl"), None) if self.segments else None
        )
        if self.embeddings:
            self.vectors = _Appender(sibling(self.out, emb.LOG_TAIL), None)
        errors = sibling(self.out, ".errors.csv")
        errors.unlink(missing_ok=True)  # the errors of this run only: earlier failures are retried
        self.errors = _Appender(errors, _csv_line(["path", "error"]))

    def add(self, rows: list[str], timelines: list[str], vectors: Sequence[str] = ()) -> None:
        if self.timelines is not None:
            self.timelines.write(timelines)  # before the rows: a row marks its file done
        if self.vectors is not None:
            self.vectors.write(vectors)
        self.rows.write(rows)

    def error(self, path: Path | str, message: str) -> None:
        self.errors.write([_csv_line([str(path), message])])

    def timeline(
        self,
        path: Path,
        key: Key,
        steps: np.ndarray,
        starts_s: list[float],
        duration: float,
        hop_s: float,
        window_s: float,
    ) -> str:
        """The JSON line of a file's window scores ``steps`` (N, C) starting at ``starts_s``;
        SRT captions too when the model is multiclass."""
        starts = [round(t, 3) for t in starts_s]
        labels = self.table.labels
        row = {
            "path": str(path),
            "size": key[0],
            "mtime_ns": key[1],
            "window": window_s,
            "hop": hop_s,
        }
        row["labels"] = labels
        row["start"] = starts
        row["top"] = [labels[i] for i in steps.argmax(1)]
        row["scores"] = np.round(steps.astype(np.float64), 5).tolist()
        if self.srt:
            row["srt"] = str(write_srt(self.srt_dir, path, row["top"], hop_s, duration))
        return json.dumps(row, ensure_ascii=False) + "\n"

    def close(self) -> None:
        for appender in (self.rows, self.timelines, self.errors, self.vectors):
            if appender is not None:
                appender.close()
        if self.lock is not None:
            self.lock.close()

    def finish(self) -> int:
        """Keep one row per file in --out, its timelines and embeddings in step; returns the
        failures listed in the errors file."""
        kept = _compact(self.out, [self.out], self.table, self.table.header, stale_check=True)
        if self.segments:
            timelines = sibling(self.out, ".segments.jsonl")
            _compact(timelines, [timelines], None, None, keep=kept)
        log = sibling(self.out, emb.LOG_TAIL)
        if log.exists():  # in step with the table, even after a run without --embeddings
            _compact(log, [log], None, None, keep=kept)
            rows = map(self.table.parse, _lines(self.out, self.table.header is not None))
            emb.write_matrix(_lines(log, False), [r[0] for r in rows if r], self.out)
        errors = sibling(self.out, ".errors.csv")
        lines = list(_lines(errors, header=True))
        if not lines:
            errors.unlink(missing_ok=True)
        # truncated files were tagged all the same: listed, not failed
        return sum(1 for line in lines if not _csv_cells(line)[1].startswith(TRUNCATED))


def _compact(
    target: Path,
    sources: list[Path],
    table: Table | None,
    header: str | None,
    stale_check: bool = False,
    keep: dict[str, Key] | None = None,
) -> dict[str, Key]:
    """Rewrite ``target`` from ``sources`` with the last row of each path (atomically, if needed).

    ``stale_check`` drops rows of files that exist with another size/mtime; ``keep`` keeps only
    rows whose path is in it. Returns the kept {path: key}.
    """
    parse = table.parse if table else _parse_json
    latest: dict[str, tuple[Key, int, int]] = {}
    total = 0
    for s, source in enumerate(sources):
        for n, line in enumerate(_lines(source, header is not None)):
            total += 1
            parsed = parse(line)
            if parsed is not None:
                latest[parsed[0]] = (parsed[1], s, n)
    kept = {p: v for p, v in latest.items() if _keep(p, v[0], stale_check, keep)}
    clean = len(sources) == 1 and len(kept) == total and _ends_whole(target)
    if not clean and (sources[1:] or target.exists()):
        wanted = {(s, n) for _, s, n in kept.values()}
        lines = ([header] if header else []) + [
            line
            for s, source in enumerate(sources)
            for n, line in enumerate(_lines(source, header is not None))
            if (s, n) in wanted
        ]
        atomic_write(target, "".join(lines))
    return {p: v[0] for p, v in kept.items()}


def _keep(path: str, key: Key, stale_check: bool, keep: dict[str, Key] | None) -> bool:
    if keep is not None:
        return path in keep
    if stale_check:
        now = file_key(real_path(path))
        return now == key or now == (-1, -1)  # a file gone (or on another machine) keeps its row
    return True


def _ends_whole(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
