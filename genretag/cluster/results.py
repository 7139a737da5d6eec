"""The output of a catalogue run: a Parquet dataset of per-file rows, an errors table, a CSV.

``<out>`` (``tags.parquet/``) is a folder of parts, ``part-<run>-<n>.parquet``, each written
whole (a temporary file renamed, or one object-store put) by the driver as results arrive, so
a killed run leaves only whole parts. The columns are ``tag``'s
(:class:`genretag.tagger.outputs.Table`): path, duration, size, mtime_ns, genres, top1,
top1_score, ..., then one score column per label (float32, unrounded).

A re-run reads the (path, size, mtime_ns) of every part and skips the files whose key is there
(what ``tag`` does); a file tagged again (changed, or tagged twice by a run killed between its
part and the next) has several rows, and :func:`read` keeps the newest (parts sort by run
time). Beside the folder, ``<stem>.errors.csv``: this run's failures and truncated files, the
columns and meaning of ``tag``'s; ``<stem>.csv`` on request: the deduplicated table in
``tag``'s CSV format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np

from genretag.io import Key, atomic_write
from genretag.tagger.outputs import FIXED_COLUMNS, Table, _csv_line

from .sources import _filesystem, is_uri

log = logging.getLogger(__name__)

PART = "part-{run}-{number:06d}.parquet"


def run_id() -> str:
    """This run's name in its parts: UTC time to the microsecond, so names sort by run."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}"


def beside(out: str, tail: str) -> str:
    """``tags.parquet`` -> ``tags<tail>`` in the same folder (a local path or a URI)."""
    head, _, name = out.rstrip("/").rpartition("/")
    stem = PurePosixPath(name).stem
    return f"{head}/{stem}{tail}" if head else f"{stem}{tail}"


def put(target: str, data: bytes) -> None:
    """Write ``data`` whole: atomically through genretag.io locally, one put for a URI."""
    if not is_uri(target):
        atomic_write(target, data)
        return
    fs, path = _filesystem(target)
    with fs.open_output_stream(path) as handle:  # an object appears whole when closed
        handle.write(data)


class Catalogue:
    """The Parquet dataset at ``out`` for the labels and top-k of ``table``."""

    def __init__(self, out: str, table: Table | None) -> None:
        """``table`` None: for reading only, whatever the labels."""
        self.out, self.table = out.rstrip("/"), table
        self.run, self.number = run_id(), 0
        self.columns = table.columns if table else None

    def _fs(self):  # -> (pyarrow FileSystem, path inside it)
        if is_uri(self.out):
            return _filesystem(self.out)
        from pyarrow import fs

        return fs.LocalFileSystem(), str(Path(self.out).resolve())

    def parts(self) -> list[str]:
        """The part files (paths inside the file system), oldest first."""
        from pyarrow import fs as pafs

        fs, root = self._fs()
        if fs.get_file_info(root).type != pafs.FileType.Directory:
            return []
        infos = fs.get_file_info(pafs.FileSelector(root))
        names = [i.path for i in infos if PurePosixPath(i.path).name.startswith("part-")]
        return sorted(n for n in names if n.endswith(".parquet"))

    def _read_parts(self, columns: list[str] | None):  # -> Iterable[pyarrow.Table]
        import pyarrow.parquet as pq

        fs, _ = self._fs()
        for part in self.parts():
            try:
                table = pq.read_table(part, columns=columns, filesystem=fs)
            except (OSError, ValueError) as error:  # not written by us: named, then ignored
                log.warning("%s: ignored, not a readable Parquet part (%s)", part, error)
                continue
            if columns is None and self.columns and table.column_names != self.columns:
                from genretag.errors import ConfigError

                raise ConfigError(
                    f"{self.out} holds rows for other labels or another --top-k; resume with "
                    f"the same --ckpt and --top-k, or choose another --out"
                )
            yield table

    def done(self) -> dict[str, Key]:
        """The key of the newest row of each path already written."""
        done: dict[str, Key] = {}
        for table in self._read_parts(["path", "size", "mtime_ns"]):
            for path, size, mtime in zip(
                *(table.column(c).to_pylist() for c in table.column_names), strict=True
            ):
                done[path] = (size, mtime)
        return done

    def write(self, rows: dict[str, np.ndarray]) -> int:
        """One part from a block of tagged rows (the Tagger's columns); returns its row count."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(rows["path"])
        if not n:
            return 0
        k, labels, scores = self.table.top_k, self.table.labels, rows["scores"]
        data = {
            "path": pa.array([str(p) for p in rows["path"]], pa.string()),
            "duration": pa.array(np.round(rows["duration"].astype(np.float64), 3)),
            "size": pa.array(rows["size"].astype(np.int64)),
            "mtime_ns": pa.array(rows["mtime_ns"].astype(np.int64)),
            "genres": pa.array([str(g) for g in rows["genres"]], pa.string()),
        }
        for j in range(k):
            data[f"top{j + 1}"] = pa.array([str(t) for t in rows[f"top{j + 1}"]], pa.string())
            data[f"top{j + 1}_score"] = pa.array(rows[f"top{j + 1}_score"].astype(np.float32))
        for c, label in enumerate(labels):
            data[label] = pa.array(scores[:, c].astype(np.float32))
        table = pa.table(data)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        name = PART.format(run=self.run, number=self.number)
        self.number += 1
        put(f"{self.out}/{name}", sink.getvalue().to_pybytes())
        return n

    def read(self):  # -> pyarrow.Table
        """Every file's newest row (parts oldest first, the last row of a path wins)."""
        import pyarrow as pa

        tables = list(self._read_parts(None))
        if not tables:
            return pa.table({c: [] for c in self.columns or FIXED_COLUMNS})
        table = pa.concat_tables(tables)
        paths = table.column("path").to_pylist()
        last = {p: i for i, p in enumerate(paths)}
        keep = sorted(last.values())
        return table.take(pa.array(keep, pa.int64())) if len(keep) < len(paths) else table

    def write_csv(self, target: str) -> int:
        """``tag``'s CSV (its header, its number formats, :meth:`Table.line`) of :meth:`read`."""
        table = self.read()
        columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
        scores = np.stack([columns[label] for label in self.table.labels], 1) if len(table) else []
        lines = [self.table.header or ""]
        for i in range(len(table)):
            key = (int(columns["size"][i]), int(columns["mtime_ns"][i]))
            lines.append(
                self.table.line(columns["path"][i], key, float(columns["duration"][i]), scores[i])
            )
        put(target, "".join(lines).encode("utf-8", "surrogateescape"))
        return len(table)


def read(out: str):  # -> pyarrow.Table
    """The Parquet dataset at ``out`` (a folder or URI), one row per file: its newest."""
    return Catalogue(out, None).read()


def write_errors(target: str, lines: Iterable[tuple[str, str]]) -> None:
    """``<stem>.errors.csv``: (path, error) of this run, as ``tag`` writes it; none: no file."""
    rows = [_csv_line([path, message]) for path, message in lines]
    if rows:
        put(
            target,
            "".join([_csv_line(["path", "error"]), *rows]).encode("utf-8", "surrogateescape"),
        )
    elif not is_uri(target):
        Path(target).unlink(missing_ok=True)
