"""``tag --embeddings``: each file's pooled trunk features, kept beside the table, in step with it.

During a run each finished file's embedding (D,) float32 (its windows' pooled features, averaged;
see genretag.inference.Predictor.window_outputs) is appended to ``<stem>.embeddings.jsonl`` before
its row goes into the table: one whole line per file, ``{"path", "size", "mtime_ns", "f32"}``
with the vector as base64 of its little-endian float32 bytes (a third the size of decimal
text). Like the table, it is appended with flush + fsync, a torn last line is cut on resume,
and a killed run leaves at most embeddings whose rows are missing (the files are tagged again).

When the run finishes (``Outputs.finish``) the log keeps the last line of each file still in
the table, and ``<stem>.embeddings.npy`` (N, D) float32 is written with row i the embedding of
the table's row i; a file scored without ``--embeddings`` has a row of NaN. Readers call
:func:`read_embeddings`, which refuses a matrix that is out of step with the table.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from genretag.errors import ConfigError
from genretag.io import Key, atomic_write

log = logging.getLogger(__name__)

LOG_TAIL = ".embeddings.jsonl"
MATRIX_TAIL = ".embeddings.npy"


def sidecar(table: Path, tail: str) -> Path:
    """``<stem><tail>`` beside ``table`` (tags.csv -> tags.embeddings.npy)."""
    return table.with_name(table.stem + tail)


def line(path: str, key: Key, vector: np.ndarray) -> str:
    """The log line of one file's embedding ``vector`` (D,)."""
    data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    row = {"path": path, "size": key[0], "mtime_ns": key[1]}
    row["f32"] = base64.b64encode(data).decode("ascii")
    return json.dumps(row, ensure_ascii=False) + "\n"


def decode(row: dict) -> np.ndarray:
    """The (D,) float32 vector of a parsed log line."""
    return np.frombuffer(base64.b64decode(row["f32"]), dtype="<f4").astype(np.float32)


def paths(log_lines: Iterable[str]) -> set[str]:
    """The paths that have an embedding in the log's lines."""
    found = set()
    for text in log_lines:
        try:
            found.add(json.loads(text)["path"])
        except (ValueError, KeyError, TypeError):
            continue
    return found


def write_matrix(log_lines: Iterable[str], table_paths: list[str], out: Path) -> int:
    """Write ``<stem>.embeddings.npy`` for the table at ``out`` (rows = ``table_paths``, in
    order) from the log's lines (the last line of a path wins); returns the rows filled."""
    vectors: dict[str, np.ndarray] = {}
    for text in log_lines:
        try:
            row = json.loads(text)
            vectors[row["path"]] = decode(row)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a damaged embedding line: %.80s", text)
    width = max((len(v) for v in vectors.values()), default=0)
    matrix = np.full((len(table_paths), width), np.nan, np.float32)
    filled = 0
    for i, path in enumerate(table_paths):
        vector = vectors.get(path)
        if vector is not None and len(vector) == width:
            matrix[i] = vector
            filled += 1
    atomic_write(sidecar(out, MATRIX_TAIL), lambda handle: np.save(handle, matrix))
    return filled


def read_embeddings(table: Path, rows: int, required: bool = True) -> np.ndarray | None:
    """The (rows, D) float32 embeddings of ``table`` (NaN rows: none), or None when there are
    none and not ``required``; ConfigError when the sidecar does not fit the table."""
    path = sidecar(table, MATRIX_TAIL)
    if not path.is_file():
        if required:
            raise ConfigError(
                f"{path}: no embeddings beside {table}; run the same genretag tag command "
                f"with --embeddings (it scores again the files that have none)"
            )
        return None
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ConfigError(
            f"{path}: not a readable .npy ({error}); run genretag tag again"
        ) from None
    if matrix.ndim != 2 or len(matrix) != rows:
        raise ConfigError(
            f"{path}: {matrix.shape[0] if matrix.ndim else 0} rows for the {rows} rows of "
            f"{table}; it is out of step: finish the run with the same genretag tag command"
        )
    return matrix.astype(np.float32, copy=False)
