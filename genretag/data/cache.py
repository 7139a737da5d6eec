"""The decoded-audio cache: each track decoded once, then crops read from memory-mapped int16.

    python -m genretag prepare --config configs/fma_small.yaml --data.cache_dir /fast/cache

Decoding a random 10 s crop of an FMA MP3 costs ~8 ms of CPU; slicing it out of a decoded file
that the page cache holds costs ~0.1 ms. With ``--data.cache_dir`` set, the first epoch (or
``prepare``, which uses every core) decodes each track whole, through genretag.data.audio, and
stores it; later epochs read crops from the stored copy. Without it, clips stream from the
audio files as before.

Layout: ``<cache_dir>/v1-16000hz-mono-int16/ab/abcdef....pcm``, one file per track, the whole
track at the model's sample rate as int16 (full scale 32768; the rare decoded sample beyond
+-1.0 is clipped) after a 16-byte header (magic, sample count), so a file can be checked for
completeness and memory-mapped (:meth:`DecodedCache.load`). What decides the stored samples decides the name: the cache format and
decoder version and the sample rate name the folder, and each file is named by a hash of the
source file's absolute path, size and modification time. A new sample rate, a re-encoded or
re-downloaded file, a new decoder version all miss the cache; another subset uses the files it
lists (fma_small's tracks are shared with fma_medium's cache, never stale).

A track that cannot be decoded is recorded once as ``<hash>.bad`` (JSON: path and reason) and
raised as :class:`~genretag.data.audio.AudioDecodeError` on every later read without decoding
again, so the datasets still report it through their ``{"bad": (path, reason)}`` items.

Concurrency: any number of DataLoader workers, DDP ranks and ``prepare`` processes may fill the
cache at once. Every file is written to a temporary name in its final folder and renamed into
place (atomic on POSIX), so a reader sees a complete file or none; two writers of the same track
write identical bytes and the last rename wins. A file that fails to load (a disk that filled
up, a crash before the data reached the disk) is deleted and decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from genretag.data import audio
from genretag.data.audio import AudioDecodeError
from genretag.io import atomic_write

log = logging.getLogger(__name__)

# Bump when the stored samples would differ for the same file and rate (decoder, downmix,
# resampler, scaling): old entries then live in a folder nobody reads.
CACHE_VERSION = 1
FULL_SCALE = 32768.0
# A stored track: MAGIC, the sample count (uint64 little-endian), the samples (int16 LE).
MAGIC = b"GTPCM16\x00"
HEADER_BYTES = len(MAGIC) + 8
PCM_DTYPE = np.dtype("<i2")
Status = Literal["cached", "decoded", "bad", "missing"]


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float32 (T,) in [-1, 1] -> int16 (T,), rounded; samples beyond full scale are clipped."""
    return np.clip(np.rint(x * FULL_SCALE), -FULL_SCALE, FULL_SCALE - 1).astype(np.int16)


def from_pcm16(pcm: np.ndarray) -> np.ndarray:
    """int16 (T,) (a memory map or an array) -> float32 (T,) in [-1, 1), in one pass."""
    return np.multiply(pcm, np.float32(1.0 / FULL_SCALE), dtype=np.float32)


class DecodedCache:
    """Decoded tracks at ``sample_rate`` under ``root``; see the module docstring.

    Picklable (a folder and a rate), so each DataLoader worker holds its own copy.
    """

    def __init__(self, root: str | os.PathLike, sample_rate: int) -> None:
        self.root = Path(root)
        self.sample_rate = int(sample_rate)
        self.folder = self.root / f"v{CACHE_VERSION}-{self.sample_rate}hz-mono-int16"

    def __repr__(self) -> str:
        return f"DecodedCache({str(self.root)!r}, sample_rate={self.sample_rate})"

    def entry(self, path: str | os.PathLike) -> Path:
        """The cache file of ``path`` without suffix; AudioDecodeError if ``path`` is missing."""
        try:
            stat = os.stat(path)
        except OSError:
            raise AudioDecodeError(path, "no such file") from None
        source = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}"
        digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()
        return self.folder / digest[:2] / digest

    # -- reading -----------------------------------------------------------------------------
    def load(self, path: str | os.PathLike) -> np.ndarray:
        """The whole track as int16 (T,), memory-mapped; decoded and stored on a miss.

        Raises AudioDecodeError for a track recorded as bad (without decoding it again) and for
        one that fails now (which is then recorded).
        """
        stored, length, decoded = self._find_or_fill(path)
        if decoded is not None:
            return decoded
        return np.memmap(stored, dtype=PCM_DTYPE, mode="r", offset=HEADER_BYTES, shape=(length,))

    def random_crop(self, path: str | os.PathLike, seconds: float, position: float) -> np.ndarray:
        """Like :func:`genretag.data.audio.random_crop`, from the cache: (T,) float32.

        T = round(seconds * sample_rate), fewer when the track is shorter (callers pad). A hit
        costs one positioned read of the crop's bytes from the page cache (cheaper than setting
        up a memory map per item).
        """
        stored, total, decoded = self._find_or_fill(path)
        length = round(seconds * self.sample_rate)
        start = round(min(max(position, 0.0), 1.0) * max(0, total - length))
        if decoded is not None:
            return from_pcm16(decoded[start : start + length])
        count = min(length, total - start)
        fd = os.open(stored, os.O_RDONLY)
        try:
            data = os.pread(fd, 2 * count, HEADER_BYTES + 2 * start)
        finally:
            os.close(fd)
        return from_pcm16(np.frombuffer(data, dtype=PCM_DTYPE))

    def decode(self, path: str | os.PathLike) -> np.ndarray:
        """The whole track, (T,) float32 at ``sample_rate``, from the cache."""
        return from_pcm16(self.load(path))

    def _find_or_fill(self, path: str | os.PathLike) -> tuple[Path, int, np.ndarray | None]:
        """(stored file, its length, None) on a hit; (file, length, int16 samples) on a fill."""
        entry = self.entry(path)
        stored = entry.with_suffix(".pcm")
        length = _stored_length(stored)
        if length is not None:
            return stored, length, None
        bad = entry.with_suffix(".bad")
        if bad.exists():
            try:
                reason = json.loads(bad.read_text())["reason"]
            except (OSError, ValueError, KeyError):
                reason = "recorded as undecodable in the cache"
            raise AudioDecodeError(path, reason)
        try:
            x = audio.decode(path, self.sample_rate)
        except AudioDecodeError as error:
            record = json.dumps({"path": str(path), "reason": error.reason}).encode()
            atomic_write(bad, record, clean_stale=False)  # workers may race
            raise
        pcm = to_pcm16(x)
        header = MAGIC + len(pcm).to_bytes(8, "little")
        atomic_write(
            stored,
            lambda f: (f.write(header), f.write(pcm.astype(PCM_DTYPE, copy=False).data)),
            clean_stale=False,  # another worker may be writing the same track
        )
        return stored, len(pcm), pcm

    def fill_one(self, path: str) -> tuple[str, Status, str]:
        """Make sure ``path`` is cached: (path, status, reason if bad or missing)."""
        try:
            _, _, decoded = self._find_or_fill(path)
        except AudioDecodeError as error:
            missing = error.reason == "no such file"
            return path, "missing" if missing else "bad", error.reason
        return path, "cached" if decoded is None else "decoded", ""


def _stored_length(stored: Path) -> int | None:
    """Samples in a stored track; None if there is none, or it is damaged (then deleted)."""
    try:
        fd = os.open(stored, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        header, size = os.pread(fd, HEADER_BYTES, 0), os.fstat(fd).st_size
    finally:
        os.close(fd)
    length = int.from_bytes(header[len(MAGIC) :], "little") if len(header) == HEADER_BYTES else -1
    if header[: len(MAGIC)] == MAGIC and size == HEADER_BYTES + 2 * length:
        return length
    log.warning("cache file %s is damaged (%d bytes); decoding its track again", stored, size)
    stored.unlink(missing_ok=True)
    return None


@dataclass
class FillReport:
    """What :func:`fill` did: counts per status, the bad tracks, seconds it took."""

    counts: Counter = field(default_factory=Counter)
    bad: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        done = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        return f"{sum(self.counts.values())} tracks in {self.seconds:.1f} s: {done}"


def fill(
    cache: DecodedCache, paths: Sequence[str], workers: int = 1, progress: bool = False
) -> FillReport:
    """Decode every path not yet cached, on ``workers`` processes; bad tracks are recorded."""
    from tqdm import tqdm

    report = FillReport()
    start = time.perf_counter()
    bar = tqdm(total=len(paths), unit="track", disable=not progress, file=sys.stderr)
    results: Iterable[tuple[str, Status, str]]
    with bar:
        if workers > 1:
            pool = ProcessPoolExecutor(workers)
            chunk = max(1, min(16, len(paths) // (workers * 8)))
            results = pool.map(cache.fill_one, paths, chunksize=chunk)
        else:
            pool, results = None, map(cache.fill_one, paths)
        try:
            for path, status, reason in results:
                report.counts[status] += 1
                if reason:
                    report.bad[path] = reason
                bar.update()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    report.seconds = time.perf_counter() - start
    return report
