"""The one place that opens audio files.

Everything that needs samples calls :func:`decode` (a clip or a crop) or :func:`stream` (a long
file in blocks). Both return float32 mono at the requested sample rate:

* libsndfile (via soundfile) first: WAV/FLAC/OGG/Opus/AIFF/MP3 with sample-exact seeking (and,
  for Ogg Opus read from its start, the same libopus arithmetic called directly, 2.2x faster);
* PyAV (FFmpeg) for what libsndfile cannot open (M4A/AAC, WMA, ...);
* the channels are averaged first, then soxr (HQ) resamples the mono signal.

How each library is driven, and its traps (MP3 seeking in libsndfile), is in
:mod:`genretag.data.sources`.

Any failure, whatever the library underneath raised, becomes :class:`AudioDecodeError`, which
names the file, so callers can skip and count a bad file instead of crashing a long run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from genretag.constants import SAMPLE_RATE
from genretag.data.sources import AVSource, SoundfileSource, Source

# Native rates a real recording can have. A damaged header that claims 1 Hz would otherwise be
# upsampled 16,000-fold (gigabytes per block); one that claims 4 GHz would be decimated to nothing.
NATIVE_RATES = (1_000, 768_000)
MAX_CHANNELS = 64  # 7th-order ambisonics; a header claiming 255 costs seconds per second of audio

PathLike = str | os.PathLike
# A file that decodes to less than this share of the length its header declares is reported as
# truncated (it is still used: what decoded is real audio).
TRUNCATED_SHARE = 0.9
_warned_truncated: set[str] = set()  # training names a truncated file once per process
log = logging.getLogger(__name__)


class AudioDecodeError(Exception):
    """A file that cannot be decoded; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: native sample rate, channels and length in native frames."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _open_soundfile(path: Path) -> tuple[Source | None, str]:
    """libsndfile's reader, or None and why libsndfile could not open the file."""
    try:
        handle = sf.SoundFile(path)
    except Exception as error:
        return None, f"{error}; "
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        return None, ""
    return SoundfileSource(handle), ""


def _open_av(path: Path, why_not_libsndfile: str) -> Source:
    try:
        import av

        container = av.open(str(path), metadata_errors="ignore")
    except Exception as error:
        raise AudioDecodeError(path, f"unreadable audio ({why_not_libsndfile}{error})") from None
    try:
        return AVSource(container)
    except Exception as error:
        container.close()
        raise AudioDecodeError(path, f"unreadable audio ({why_not_libsndfile}{error})") from None


@contextmanager
def _open(path: PathLike) -> Iterator[Source]:
    """Open with libsndfile, else PyAV; any failure is an AudioDecodeError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    source, why = _open_soundfile(path)
    if source is None:
        source = _open_av(path, why)
    if not NATIVE_RATES[0] <= source.sample_rate <= NATIVE_RATES[1]:
        source.close()
        raise AudioDecodeError(
            path, f"implausible sample rate in the header: {source.sample_rate} Hz"
        )
    if source.channels > MAX_CHANNELS:
        source.close()
        raise AudioDecodeError(path, f"implausible channel count in the header: {source.channels}")
    try:
        yield source
    except AudioDecodeError:
        raise
    except Exception as error:
        raise AudioDecodeError(path, f"decoding failed: {error}") from error
    finally:
        source.close()


def info(path: PathLike) -> AudioInfo:
    """Native sample rate, channels and length of ``path`` without decoding it."""
    with _open(path) as source:
        return AudioInfo(source.sample_rate, source.channels, max(0, source.frames))


def _resampled(
    source: Source, path: PathLike, sr: int, start: int, count: int | None
) -> Iterator[np.ndarray]:
    """Mono blocks of ``count`` native frames from ``start``, resampled to ``sr``.

    A request that comes in one block (a crop, a whole FMA clip) is resampled in one shot (what
    soxr's stream gives for a single chunk, 25% faster); longer ones through a stream.
    """
    native = source.sample_rate
    blocks = source.blocks(start, count)
    resampler = None
    produced = 0
    following = next(blocks, None)
    while following is not None:
        block, following = following, next(blocks, None)
        if not np.isfinite(block).all():
            raise AudioDecodeError(path, "non-finite samples (NaN or inf) in the audio data")
        if native == sr:
            out = block
        elif resampler is None and following is None:
            out = soxr.resample(block, native, sr, quality="HQ")
        else:
            resampler = resampler or soxr.ResampleStream(native, sr, 1, quality="HQ")
            out = resampler.resample_chunk(block, last=following is None)
        produced += len(out)
        if len(out):
            yield out
    if produced == 0 and start == 0:
        raise AudioDecodeError(path, "no audio samples")


def stream(
    path: PathLike,
    sr: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Decode ``path`` lazily: successive float32 mono blocks at ``sr`` Hz, shape (n,).

    Memory stays bounded (a block of native frames at a time), so an hour-long file is never
    held whole. Raises AudioDecodeError if the file cannot be opened or decoded, or holds no
    finite samples.
    """
    with _open(path) as source:
        start = max(0, round(offset * source.sample_rate))
        count = None if duration is None else max(0, round(duration * source.sample_rate))
        yield from _resampled(source, path, sr, start, count)


def _joined(blocks: Iterator[np.ndarray], length: int | None) -> np.ndarray:
    parts = list(blocks)
    audio = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.zeros(0, np.float32)])
    return audio[:length].astype(np.float32, copy=False)


def decode(
    path: PathLike,
    sr: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode ``duration`` seconds of ``path`` from ``offset`` s as float32 mono at ``sr`` Hz.

    Returns shape (T,) with T = round(duration * sr) when the file is long enough, fewer samples
    when it ends first (callers pad), the whole file when ``duration`` is None. Only the
    requested segment is decoded: seeking is exact for libsndfile formats (FMA's MP3s included).
    """
    length = None if duration is None else round(duration * sr)
    return _joined(stream(path, sr, offset, duration), length)


def truncation(path: PathLike, samples: int, sr: int) -> tuple[str, int, int] | None:
    """(path, ``samples``, the samples at ``sr`` its header declares) when ``samples`` is less than
    ``TRUNCATED_SHARE`` of the declared length (a cut download keeps its header), else None."""
    try:
        header = info(path)
    except AudioDecodeError:
        return None
    expected = round(header.frames * sr / header.sample_rate)
    if header.frames > 0 and samples < TRUNCATED_SHARE * expected:
        return str(path), int(samples), expected
    return None


def random_crop(path: PathLike, sr: int, duration: float, position: float) -> np.ndarray:
    """A ``duration`` s crop starting at ``position`` (0..1) of the room the file leaves.

    Opens the file once (the length comes from the header), so a random training crop costs one
    seek and the decoding of the crop alone. Returns (T,) float32 mono, shorter than
    round(duration * sr) only when the whole file is shorter (callers pad).
    """
    length, position = round(duration * sr), min(max(position, 0.0), 1.0)
    with _open(path) as source:
        count = round(duration * source.sample_rate)
        start = round(position * max(0, source.frames - count))
        crop = _joined(_resampled(source, path, sr, start, count), length)
    if start == 0 or len(crop) >= length // 2:
        return crop
    # The header promised more audio than the file holds (a truncated download keeps its Xing
    # header; a damaged length field): the crop fell past the real end. Crop what is there.
    whole = decode(path, sr)
    if str(path) not in _warned_truncated:
        _warned_truncated.add(str(path))
        log.warning(
            "%s: truncated: decodes to %.1f s but its header declares %.1f s",
            path, len(whole) / sr, source.frames / source.sample_rate,
        )  # fmt: skip
    at = round(position * max(0, len(whole) - length))
    return whole[at : at + length]
