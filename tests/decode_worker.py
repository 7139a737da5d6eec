"""A decoding worker for the fuzz tests: run as a script, one JSON request per stdin line.

Each request ``{"path": ..., "ops": [...]}`` is answered with one JSON line: what each decoder
entry point (``decode`` whole, ``decode`` of a segment, ``random_crop``, ``stream``, and a decode
through the PyAV/FFmpeg fallback whatever the format; all by default) did with the file (``ok`` with the length, ``decode-error`` for an AudioDecodeError
naming the file, or what else happened), and the worker's peak resident memory before and after. The parent kills and replaces the worker when a file
crashes it or takes too long, so a native crash or a hang names the file instead of ending the
test run.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from genretag.data import audio


def _check(samples: np.ndarray | int) -> dict[str, Any]:
    """``ok`` for finite float32 mono samples (or a count from _streamed), else what is wrong."""
    if isinstance(samples, int):
        return {"result": "ok", "samples": samples}
    if not isinstance(samples, np.ndarray) or samples.dtype != np.float32 or samples.ndim != 1:
        kind = getattr(samples, "dtype", type(samples).__name__)
        return {"result": "bad-output", "detail": f"{kind}, ndim {getattr(samples, 'ndim', '?')}"}
    if not np.isfinite(samples).all():
        return {"result": "bad-output", "detail": "non-finite samples"}
    return {"result": "ok", "samples": int(len(samples))}


def _streamed(path: str) -> int:
    """Stream the file block by block, checking each and keeping none: the sample count."""
    total = 0
    for block in audio.stream(path, 16_000):
        problem = _check(block)
        if problem["result"] != "ok":
            raise ValueError(f"a streamed block: {problem['detail']}")
        total += len(block)
    return total


def _through_ffmpeg(path: str) -> np.ndarray:
    """A whole decode and a segment through the PyAV fallback, as if libsndfile had refused."""
    real = audio._open_soundfile
    audio._open_soundfile = lambda p: (None, "")
    try:
        whole = audio.decode(path, 16_000)
        return np.concatenate([whole, audio.decode(path, 16_000, offset=0.7, duration=1.0)])
    finally:
        audio._open_soundfile = real


OPERATIONS: dict[str, Callable[[str], np.ndarray | int]] = {
    "decode": lambda p: audio.decode(p, 16_000),
    "segment": lambda p: audio.decode(p, 16_000, offset=0.7, duration=1.0),
    "crop": lambda p: audio.random_crop(p, 16_000, 1.0, 0.9),
    "stream": _streamed,
    "ffmpeg": _through_ffmpeg,
}


def _out_of_memory(error: BaseException) -> bool:
    """Whether an allocation failed on the way (the worker runs under an address-space limit).

    FFmpeg's own ENOMEM (av.error.MemoryError) is left out: FFmpeg refuses any single
    allocation over INT_MAX by itself, so that is a clean refusal, limit or no limit.
    """
    import av

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, MemoryError) and not isinstance(seen, av.error.FFmpegError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def run_one(path: str, operations: list[str]) -> dict[str, Any]:
    """The named operations on one file: {operation: {"result": ok|decode-error|...}}."""
    report: dict[str, Any] = {}
    for name in operations:
        operation = OPERATIONS[name]
        start = time.perf_counter()
        try:
            outcome = _check(operation(path))
        except audio.AudioDecodeError as error:
            named = error.path == path and path in str(error)
            result = "decode-error" if named else "unnamed-error"
            if _out_of_memory(error):  # an allocation a damaged header talked it into
                result = "memory-error"
            outcome = {"result": result, "detail": str(error)}
        except BaseException as error:  # noqa: BLE001 - everything else is the finding
            outcome = {"result": "exception", "detail": f"{type(error).__name__}: {error}"}
        outcome["seconds"] = round(time.perf_counter() - start, 4)
        report[name] = outcome
    return report


def _peak_mb() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        before = _peak_mb()
        operations = request.get("ops") or list(OPERATIONS)
        report = {"path": request["path"], "ops": run_one(request["path"], operations)}
        report["peak_mb_before"], report["peak_mb"] = before, _peak_mb()
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    # Warm up the imports (PyAV is imported lazily) so the first file's time is its own.
    import av  # noqa: F401

    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    main()
