"""The one place that opens audio files.

Everything that needs samples calls :func:`decode` (a clip or a crop) or :func:`stream` (a long
file in blocks). Both return float32 mono at the requested sample rate:

* libsndfile (via soundfile) first: WAV/FLAC/OGG/Opus/AIFF/MP3 with sample-exact seeking; a
  whole Ogg Opus file goes through :mod:`genretag.data.opus` (the same samples, 1.7x faster);
* PyAV (FFmpeg) for what libsndfile cannot open (M4A/AAC, WMA, ...). Seeks start
  ``AV_SEEK_PREROLL`` early (MP3 bit reservoir, AAC priming) and are cut by timestamps;
  corrupt packets are skipped, as FFmpeg's own tools do;
* the channels are averaged first, then soxr (HQ) resamples the mono signal.

MP3 through libsndfile needs care (libsndfile 1.2, soundfile 0.12-0.13). ``SoundFile.read``
calls ``sf_seek`` before and after every read to track its position, and every seek resets the
MPEG decoder: the next one to four frames come out wrong (bit reservoir, MDCT overlap), which
looked like "zero-filled samples across reads". So an MP3 region is read with ONE ``read`` call
after a seek to a frame boundary ``MPEG_PREROLL_FRAMES`` before it, and the pre-roll is cut off;
a stream longer than ``CHUNK_SAMPLES`` repeats that per chunk. The result equals a one-shot decode
of the whole file (and FFmpeg's decode) sample for sample, at 2-3x the speed of FFmpeg via PyAV.

Any failure, whatever the library underneath raised, becomes :class:`AudioDecodeError`, which
names the file, so callers can skip and count a bad file instead of crashing a long run.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from genretag.constants import SAMPLE_RATE

MPEG_FRAME = 1152  # samples per MPEG-1 Layer III frame (MPEG-2's 576 divides it)
# Pre-roll before an MP3 seek target: after a seek libsndfile's decoder is wrong for up to 4 frames
# at low bit rates (2 at FMA's 320 kbit/s); 8 frames (0.2 s at 44.1 kHz) leaves a margin.
MPEG_PREROLL_FRAMES = 8 * MPEG_FRAME
CHUNK_SAMPLES = 1 << 22  # MP3 samples (frames x channels) per read: 16 MiB, 47 s of 44.1 kHz stereo
BLOCK_FRAMES = 1 << 16  # frames per block from formats that need no care (and from PyAV reads)
AV_SEEK_PREROLL = 0.5  # seconds decoded before a PyAV seek target (0.2 s is not enough at 22 kHz)
AV_MAX_BAD_PACKETS = 0.5  # share of undecodable packets above which a file counts as bad
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


class _Source:
    """An opened file: native rate, channels, frames, and mono float32 blocks from a frame."""

    sample_rate: int
    channels: int
    frames: int

    def blocks(self, start: int, count: int | None) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def downmix(block: np.ndarray) -> np.ndarray:
    """(n, C) float32 -> a new (n,) array of the channel mean, bit-identical to ``mean(axis=1)``.

    numpy reduces a short inner axis one element at a time (10 ms for 10 s of stereo); adding
    whole columns is vectorised and does the same float32 operations in the same order.
    """
    channels = block.shape[1]
    if channels == 1:
        return block[:, 0].copy()
    mono = block[:, 0] + block[:, 1]
    for c in range(2, channels):
        mono += block[:, c]
    mono /= np.float32(channels)
    return mono


_scratch = threading.local()


def _scratch_frames(frames: int, channels: int) -> np.ndarray:
    """A reusable (frames, channels) float32 read buffer, one per thread.

    Reading into a fresh 3.5 MB array per crop costs ~4 ms of page faults (a third of the crop's
    time); decoding into the same pages again avoids them. Contents are valid until the next call.
    """
    need = frames * channels
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.size < need:
        buffer = _scratch.buffer = np.empty(need, np.float32)
    return buffer[:need].reshape(frames, channels)


class _SoundfileSource(_Source):
    def __init__(self, handle: sf.SoundFile, path: Path | None = None) -> None:
        self.handle, self.path = handle, path
        self.sample_rate = handle.samplerate
        self.channels = handle.channels
        self.frames = handle.frames
        self.mpeg = handle.format == "MP3"
        self.opus = (handle.format, handle.subtype) == ("OGG", "OPUS")
        # libsndfile 1.2.2 segfaults in sf_seek on an Ogg Vorbis stream with one damaged packet
        # (a bit flip under a valid page CRC; tests/test_fuzz.py): reach a position by reading.
        self.seekable = (handle.format, handle.subtype) != ("OGG", "VORBIS")

    def close(self) -> None:
        self.handle.close()

    def blocks(self, start: int, count: int | None) -> Iterator[np.ndarray]:
        if start > 0 and start >= self.frames:
            return
        if self.opus and start == 0 and count is None and self.path is not None:
            from genretag.data import opus  # the same samples as libsndfile's, 1.7x faster

            whole = opus.whole_file(self.path, self.frames)
            if whole is not None:
                yield from whole
                return
        step = max(MPEG_FRAME, CHUNK_SAMPLES // self.channels) if self.mpeg else BLOCK_FRAMES
        position, end = start, math.inf if count is None else start + count
        while position < end:
            want = int(min(step, end - position))
            block = self._mpeg_chunk(position, want) if self.mpeg else self._plain(position, want)
            if len(block) == 0:
                return
            position += len(block)
            yield downmix(block)
            if len(block) < want:
                return

    def _read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` frames from the current position, (n, C) in the scratch buffer."""
        out = _scratch_frames(frames, self.channels)
        return self.handle.read(frames, dtype="float32", always_2d=True, out=out)

    def _plain(self, position: int, want: int) -> np.ndarray:
        """Sequential reads (exact for PCM, FLAC, Vorbis, Opus); a seek before the first."""
        if position > 0 and self.handle.tell() != position:
            if self.seekable:
                self.handle.seek(position)
            else:  # forward only: a source is opened per request and read in order
                while (ahead := position - self.handle.tell()) > 0:
                    if len(self._read(min(ahead, BLOCK_FRAMES))) == 0:
                        break
        return self._read(want)

    def _mpeg_chunk(self, position: int, want: int) -> np.ndarray:
        """``want`` frames from ``position`` in one read after a pre-rolled, frame-aligned seek."""
        if position == 0:  # only ever the first read after opening: no seek, no pre-roll
            return self._read(want)
        at = max(0, position - MPEG_PREROLL_FRAMES) // MPEG_FRAME * MPEG_FRAME
        self.handle.seek(at)
        return self._read(position - at + want)[position - at :]


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
        # Packed float, not planar: PyAV's to_ndarray reads garbage (and segfaults) past the 8
        # planes an AVFrame holds inline, which a damaged header claiming 255 channels reaches.
        to_packed = av.AudioResampler(format="flt")
        position = None  # native frame index of the next sample, from the first frame's pts
        end = math.inf if count is None else start + count
        for decoded in self._frames():
            if position is None:
                pts = decoded.pts
                position = round((float(pts * base) - t0) * rate) if pts is not None else 0
            for frame in to_packed.resample(decoded):
                chunk = downmix(frame.to_ndarray().reshape(-1, frame.layout.nb_channels))
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
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        return None, ""
    return _SoundfileSource(handle, path), ""


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
    source: _Source, path: PathLike, sr: int, start: int, count: int | None
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
