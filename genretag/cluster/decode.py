"""The CPU stage: decode each file once and cut the windows ``tag`` scores (Ray tasks).

A batch of file rows (``path``, ``size``, ``mtime_ns``) becomes, per file, its windows
(W, window) float32, cut by :class:`genretag.inference.WindowCutter` from the blocks of
:func:`genretag.data.audio.stream` exactly as ``tag`` cuts them, and the decoded length. A
file that does not decode gets no windows and its ``error`` (the reason ``tag`` records); a
short decode (a cut download) is tagged all the same and noted in ``truncated``. Nothing a
file does ends the task: a worker that dies (a native crash, a lost node) is retried by Ray.

URIs are fetched into a temporary file on the worker first (the decoder reads local files).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from genretag.data import audio
from genretag.tagger.outputs import truncation_note
from genretag.tagger.scan import real_path
from genretag.windows import PadMode, WindowCutter

from .sources import _filesystem, is_uri


@dataclass(frozen=True)
class Cut:
    """How a checkpoint wants its audio: the rate, window and hop in samples, the padding."""

    sample_rate: int
    window: int
    hop: int
    pad_mode: PadMode


def decode_batch(batch: dict[str, np.ndarray], cut: Cut) -> dict[str, list]:
    """File rows -> the same rows with ``windows`` (W, T), ``samples``, ``error``, ``truncated``."""
    out: dict[str, list] = {
        name: []
        for name in ("path", "size", "mtime_ns", "windows", "samples", "error", "truncated")
    }
    for path, size, mtime in zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True):
        windows, samples, error, short = np.zeros((0, cut.window), np.float32), 0, "", ""
        try:
            with local_copy(str(path)) as local:
                windows, samples = decode_file(local, cut)
                short = truncated(local, samples, cut.sample_rate)
        except audio.AudioDecodeError as failure:
            error = failure.reason
        except Exception as failure:  # a decoder bug on one file must not stop the catalogue
            error = f"{type(failure).__name__}: {failure}"
        for name, value in zip(
            out, (str(path), int(size), int(mtime), windows, samples, error, short), strict=True
        ):
            out[name].append(value)
    return out


def decode_file(path: str | os.PathLike, cut: Cut) -> tuple[np.ndarray, int]:
    """The windows (W, window) float32 of ``path`` and its decoded length in samples.

    The same windows as ``tag``'s stream (genretag.tagger.stream.WindowStream) and ``test``'s
    :func:`genretag.inference.windows` of the whole clip.
    """
    cutter = WindowCutter(cut.window, cut.hop, cut.pad_mode)
    windows: list[np.ndarray] = []
    for block in audio.stream(path, cut.sample_rate):
        windows += cutter.feed(block)
    windows += cutter.finish()
    return np.stack(windows).astype(np.float32, copy=False), cutter.total


def truncated(path: str | os.PathLike, samples: int, rate: int) -> str:
    """``tag``'s errors-table note for a short decode (see genretag.tagger.stream.infer), or ""."""
    short = audio.truncation(path, samples, rate)
    if short is None:
        return ""
    _, got, want = short
    return truncation_note(got, want, rate)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """A local path for ``path``: the file itself, or a URI's object fetched into a temporary
    file (same extension: the decoder's fallback guesses formats by it), removed afterwards."""
    if not is_uri(path):
        yield real_path(path)
        return
    fs, inner = _filesystem(path)
    folder = tempfile.mkdtemp(prefix="genretag-")
    try:
        local = Path(folder) / f"audio{PurePosixPath(inner).suffix}"
        try:
            with fs.open_input_stream(inner) as source, open(local, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except OSError as error:
            raise audio.AudioDecodeError(path, f"could not fetch ({error})") from None
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)
