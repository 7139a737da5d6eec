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

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from genretag.data import audio
from genretag.data.audio import AudioDecodeError
from genretag.errors import ConfigError
from genretag.system import available_cores

if TYPE_CHECKING:
    from genretag.data.datamodules import ClipDataModule

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


def _write_atomic(target: Path, write: Callable[[object], None]) -> None:
    """Write through ``write(file)`` to a temporary file beside ``target``, then rename it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            write(handle)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


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
            _write_atomic(bad, lambda f: f.write(record))
            raise
        pcm = to_pcm16(x)
        header = MAGIC + len(pcm).to_bytes(8, "little")
        _write_atomic(
            stored, lambda f: (f.write(header), f.write(pcm.astype(PCM_DTYPE, copy=False).data))
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


# -- `python -m genretag prepare` ------------------------------------------------------------------
def load_datamodule(configs: Sequence[str], overrides: Sequence[str]) -> ClipDataModule:
    """The data module that ``fit --config ...`` would build, from the configs' ``data`` section.

    Only ``data`` matters here, so it is read from the YAML files (later files win, key by key,
    as in LightningCLI) and given with the ``--data.*`` overrides to a jsonargparse parser for
    the data module alone: the same class resolution and type checks as ``fit``, without
    building a model or a trainer.
    """
    import yaml
    from jsonargparse import ArgumentParser

    from genretag.data.datamodules import ClipDataModule

    data: dict = {}
    for config in configs:
        try:
            loaded = yaml.safe_load(Path(config).read_text()) or {}
        except OSError as error:
            raise ConfigError(f"--config: cannot read {config} ({error.strerror})") from None
        section = loaded.get("data") if isinstance(loaded, dict) else None
        if isinstance(section, dict):
            data = _merged(data, section)
    if not data and not any(o.startswith("--data") for o in overrides):
        raise ConfigError(
            "prepare: no data section; pass --config with a training config (configs/*.yaml)"
        )
    parser = ArgumentParser(exit_on_error=False, parser_mode="omegaconf")
    parser.add_subclass_arguments(ClipDataModule, "data", required=True)
    args = ([f"--data={json.dumps(data)}"] if data else []) + list(overrides)
    try:
        cfg = parser.parse_args(args)
    except Exception as error:  # jsonargparse's ArgumentError: a wrong key or value
        raise ConfigError(f"prepare: {error}") from None
    return parser.instantiate_classes(cfg).data


def _merged(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    if "class_path" in update and update["class_path"] != base.get("class_path"):
        merged["init_args"] = update.get("init_args", {})  # another class: its own arguments
    return merged


def dataset_paths(datamodule: ClipDataModule) -> list[str]:
    """Every distinct audio file of the training, validation and test splits, in order."""
    paths: dict[str, None] = {}
    for stage in ("train", "val", "test"):
        try:
            clips = datamodule.clip_list(stage)  # type: ignore[arg-type]
        except ConfigError as error:
            log.warning("prepare: skipping the %s split: %s", stage, error)
            continue
        paths.update(dict.fromkeys(clips.paths))
    return list(paths)


def main(argv: list[str]) -> int:
    """``prepare``: decode a config's dataset into its cache; 1 if some tracks are bad."""
    parser = argparse.ArgumentParser(
        prog="genretag prepare",
        allow_abbrev=False,
        description="Decode every track of a config's dataset once into --data.cache_dir, "
        "using every core, so that training reads crops from memory-mapped int16.",
        epilog="Any --data.* option of `fit` is accepted, e.g. --data.cache_dir /fast/cache.",
    )
    parser.add_argument("--config", action="append", default=[], help="training YAML config")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("--") and not a.startswith("--data")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (only --data.* options)")
    datamodule = load_datamodule(args.config, rest)
    cache = datamodule.cache
    if cache is None:
        raise ConfigError(
            "data.cache_dir: not set; pass --data.cache_dir DIR (or set cache_dir in the config's "
            "data section) to say where decoded audio goes"
        )
    paths = dataset_paths(datamodule)
    workers = args.workers or available_cores()  # prepare has the machine to itself
    log.info("decoding %d tracks at %d Hz into %s on %d processes", len(paths),
             cache.sample_rate, cache.folder, workers)  # fmt: skip
    report = fill(cache, paths, workers, progress=not args.no_progress)
    for path, reason in list(report.bad.items())[:20]:
        log.warning("bad track %s: %s", path, reason)
    if len(report.bad) > 20:
        log.warning("... and %d more bad tracks", len(report.bad) - 20)
    print(f"prepared {cache.folder}: {report.summary()}")
    return 1 if report.bad else 0
