"""The one place that opens audio files.

Everything that needs samples calls :func:`decode` (a clip or a crop) or :func:`stream` (a long
file in blocks). Both return float32 mono at the requested sample rate:

* libsndfile (via soundfile) for WAV/FLAC/OGG/Opus/AIFF: sample-exact seeking;
* PyAV (FFmpeg) for MP3 and for what libsndfile cannot open (M4A/AAC, WMA, ...). libsndfile
  1.2's MP3 reader zero-fills samples when a file is read in several calls, or after a seek
  (tests/test_audio.py shows it on FMA-like files), so MP3s go to FFmpeg, whose whole-file
  decode matches libsndfile's one-shot decode sample for sample. Seeks start ``AV_SEEK_PREROLL``
  early (MP3 bit reservoir and MDCT overlap) and are cut by timestamps: sample-exact; corrupt
  packets are skipped, as FFmpeg's own tools do;
* the channels are averaged first, then soxr (HQ) resamples the mono signal.

Any failure, whatever the library underneath raised, becomes :class:`AudioDecodeError`, which
names the file, so callers can skip and count a bad file instead of crashing a long run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
BLOCK_FRAMES = 1 << 16  # ~1.5 s at 44.1 kHz: bounded memory whatever a header claims
AV_SEEK_PREROLL = 0.5  # seconds decoded before a PyAV seek target (0.2 s is not enough at 22 kHz)
AV_MAX_BAD_PACKETS = 0.5  # share of undecodable packets above which a file counts as bad
LIBSNDFILE_SKIP = {"MP3"}  # formats libsndfile opens but FFmpeg decodes (see above)

PathLike = str | os.PathLike


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


class _Source:
    """An opened file: native rate, channels, frames, and mono float32 blocks from a frame."""

    sample_rate: int
    channels: int
    frames: int

    def blocks(self, start: int, count: int | None) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SoundfileSource(_Source):
    def __init__(self, handle: sf.SoundFile) -> None:
        self.handle = handle
        self.sample_rate = handle.samplerate
        self.channels = handle.channels
        self.frames = handle.frames

    def close(self) -> None:
        self.handle.close()

    def blocks(self, start: int, count: int | None) -> Iterator[np.ndarray]:
        if start > 0:
            if start >= self.frames:
                return
            self.handle.seek(start)
        left = math.inf if count is None else count
        while left > 0:
            block = self.handle.read(int(min(BLOCK_FRAMES, left)), dtype="float32", always_2d=True)
            if len(block) == 0:
                return
            left -= len(block)
            yield block.mean(axis=1, dtype=np.float32)


class _AVSource(_Source):
    def __init__(self, container) -> None:  # container: av.container.InputContainer
        if not container.streams.audio:
            raise ValueError("no audio stream")
        self.container = container
        self.stream = container.streams.audio[0]
        self.sample_rate = int(self.stream.codec_context.sample_rate or self.stream.rate or 0)
        if self.sample_rate <= 0:
            raise ValueError("no sample rate in the audio stream")
        self.channels = self.stream.codec_context.channels or 1
        seconds = None
        if self.stream.duration is not None and self.stream.time_base is not None:
            seconds = float(self.stream.duration * self.stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        self.frames = round(seconds * self.sample_rate) if seconds else 0

    def close(self) -> None:
        self.container.close()

    def _frames(self) -> Iterator:
        """Decoded frames, skipping packets FFmpeg cannot decode (a bit flip costs ~26 ms)."""
        import av

        packets = bad = 0
        for packet in self.container.demux(self.stream):
            packets += 1
            try:
                yield from packet.decode()
            except av.error.FFmpegError:  # InvalidDataError and friends: one damaged packet
                bad += 1
        if packets and bad > AV_MAX_BAD_PACKETS * packets:
            raise ValueError(f"{bad} of {packets} packets are damaged")

    def blocks(self, start: int, count: int | None) -> Iterator[np.ndarray]:
        import av

        stream, rate, base = self.stream, self.sample_rate, self.stream.time_base
        t0 = float(stream.start_time * base) if stream.start_time is not None else 0.0
        if start > 0:
            target = max(0.0, start / rate - AV_SEEK_PREROLL) + t0
            self.container.seek(int(target / base), stream=stream, backward=True)
        to_planar = av.AudioResampler(format="fltp")
        position = None  # native frame index of the next sample, from the first frame's pts
        end = math.inf if count is None else start + count
        for decoded in self._frames():
            if position is None:
                pts = decoded.pts
                position = round((float(pts * base) - t0) * rate) if pts is not None else 0
            for frame in to_planar.resample(decoded):
                chunk = frame.to_ndarray().mean(axis=0, dtype=np.float32)
                lo, position = position, position + len(chunk)
                if position <= start:
                    continue
                yield chunk[max(0, start - lo) : int(min(len(chunk), end - lo))]
                if position >= end:
                    return


def _open_soundfile(path: Path) -> tuple[_Source | None, str]:
    """libsndfile's reader, or None and why libsndfile could not open the file."""
    try:
        handle = sf.SoundFile(path)
    except Exception as error:
        return None, f"{error}; "
    if handle.format in LIBSNDFILE_SKIP or handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        return None, ""
    return _SoundfileSource(handle), ""


def _open_av(path: Path, why_not_libsndfile: str) -> _Source:
    try:
        import av

        container = av.open(str(path), metadata_errors="ignore")
    except Exception as error:
        raise AudioDecodeError(path, f"unreadable audio ({why_not_libsndfile}{error})") from None
    try:
        return _AVSource(container)
    except Exception as error:
        container.close()
        raise AudioDecodeError(path, f"unreadable audio ({why_not_libsndfile}{error})") from None


@contextmanager
def _open(path: PathLike) -> Iterator[_Source]:
    """Open with libsndfile, else PyAV; any failure is an AudioDecodeError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    source, why = _open_soundfile(path)
    if source is None:
        source = _open_av(path, why)
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
    source: _Source, path: PathLike, sr: int, start: int, count: int | None
) -> Iterator[np.ndarray]:
    """Mono blocks of ``count`` native frames from ``start``, resampled to ``sr``."""
    native = source.sample_rate
    resampler = None if native == sr else soxr.ResampleStream(native, sr, 1, quality="HQ")
    produced = 0
    for block in source.blocks(start, count):
        if not np.isfinite(block).all():
            raise AudioDecodeError(path, "non-finite samples (NaN or inf) in the audio data")
        out = block if resampler is None else resampler.resample_chunk(block)
        produced += len(out)
        if len(out):
            yield out
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        produced += len(tail)
        if len(tail):
            yield tail
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
    audio = np.concatenate(list(blocks) or [np.zeros(0, np.float32)])
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


def random_crop(path: PathLike, sr: int, duration: float, position: float) -> np.ndarray:
    """A ``duration`` s crop starting at ``position`` (0..1) of the room the file leaves.

    Opens the file once (the length comes from the header), so a random training crop costs one
    seek and the decoding of the crop alone. Returns (T,) float32 mono, shorter than
    round(duration * sr) only when the whole file is shorter (callers pad).
    """
    with _open(path) as source:
        count = round(duration * source.sample_rate)
        start = round(min(max(position, 0.0), 1.0) * max(0, source.frames - count))
        return _joined(_resampled(source, path, sr, start, count), round(duration * sr))
