"""The libraries underneath genretag.data.audio: native-rate mono blocks from an opened file.

Only :mod:`genretag.data.audio` uses this module; everything else decodes through it.

* :class:`SoundfileSource`: libsndfile (via soundfile), WAV/FLAC/OGG/Opus/AIFF/MP3 with
  sample-exact seeking;
* :class:`AVSource`: PyAV (FFmpeg) for what libsndfile cannot open (M4A/AAC, WMA, ...). Seeks
  start ``AV_SEEK_PREROLL`` early (MP3 bit reservoir, AAC priming) and are cut by timestamps;
  corrupt packets are skipped, as FFmpeg's own tools do.

MP3 through libsndfile needs care (libsndfile 1.2, soundfile 0.12-0.13). ``SoundFile.read``
calls ``sf_seek`` before and after every read to track its position, and every seek resets the
MPEG decoder: the next one to four frames come out wrong (bit reservoir, MDCT overlap), which
looked like "zero-filled samples across reads". So an MP3 region is read with ONE ``read`` call
after a seek to a frame boundary ``MPEG_PREROLL_FRAMES`` before it, and the pre-roll is cut off;
a stream longer than ``CHUNK_SAMPLES`` repeats that per chunk. The result equals a one-shot decode
of the whole file (and FFmpeg's decode) sample for sample, at 2-3x the speed of FFmpeg via PyAV.

Ogg Opus read from its start (``tag``'s streams, whole clips) goes through the same libopus
arithmetic faster: PyAV's Ogg demuxer hands the packets to libopus, called directly
(:mod:`genretag.data.libopus`), at the rate libsndfile decodes at (the header's input rate where
libopus has it, else 48 kHz), with the pre-skip and output gain libsndfile applies. On real
recordings that gives libsndfile's samples (largest difference 4e-7, the same length) at 2.2x its
speed, and 1.2x FFmpeg's libopus wrapper, whose frames PyAV converts one by one (and which always
decodes at 48 kHz). Where that path does not apply (no libopus found, more than two channels, a
stream PyAV cannot open) or stops early (a damaged packet, a demuxer error), libsndfile decodes
from where it stopped, so the samples are never fewer than libsndfile alone would give. Crops that
start later (training) seek with libsndfile.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator

import numpy as np
import soundfile as sf

from genretag.data import libopus

MPEG_FRAME = 1152  # samples per MPEG-1 Layer III frame (MPEG-2's 576 divides it)
# Pre-roll before an MP3 seek target: after a seek libsndfile's decoder is wrong for up to 4 frames
# at low bit rates (2 at FMA's 320 kbit/s); 8 frames (0.2 s at 44.1 kHz) leaves a margin.
MPEG_PREROLL_FRAMES = 8 * MPEG_FRAME
CHUNK_SAMPLES = 1 << 22  # MP3 samples (frames x channels) per read: 16 MiB, 47 s of 44.1 kHz stereo
BLOCK_FRAMES = 1 << 16  # frames per block from formats that need no care (and from PyAV reads)
AV_SEEK_PREROLL = 0.5  # seconds decoded before a PyAV seek target (0.2 s is not enough at 22 kHz)
AV_MAX_BAD_PACKETS = 0.5  # share of undecodable packets above which a file counts as bad
OPUS_RATE = 48_000  # Opus's own rate: the pre-skip counts samples at it
log = logging.getLogger(__name__)


class Source:
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


class SoundfileSource(Source):
    def __init__(self, handle: sf.SoundFile) -> None:
        self.handle = handle
        self.sample_rate = handle.samplerate
        self.channels = handle.channels
        self.frames = handle.frames
        self.mpeg = handle.format == "MP3"
        # libsndfile 1.2.2 segfaults in sf_seek on an Ogg Vorbis stream with one damaged packet
        # (a bit flip under a valid page CRC; tests/test_fuzz.py): reach a position by reading.
        self.seekable = (handle.format, handle.subtype) != ("OGG", "VORBIS")
        self.opus = (handle.format, handle.subtype) == ("OGG", "OPUS")

    def close(self) -> None:
        self.handle.close()

    def blocks(self, start: int, count: int | None) -> Iterator[np.ndarray]:
        if start > 0 and start >= self.frames:
            return
        position, end = start, math.inf if count is None else start + count
        if start == 0 and self.opus:  # libopus directly while it runs clean (module docstring)
            for block in self._opus(end):
                position += len(block)
                yield downmix(block)
            if position >= min(end, self.frames):
                return
        step = max(MPEG_FRAME, CHUNK_SAMPLES // self.channels) if self.mpeg else BLOCK_FRAMES
        while position < end:
            want = int(min(step, end - position))
            block = self._mpeg_chunk(position, want) if self.mpeg else self._plain(position, want)
            if len(block) == 0:
                return
            position += len(block)
            yield downmix(block)
            if len(block) < want:
                return

    def _opus(self, end: float) -> Iterator[np.ndarray]:
        """(n, C) blocks of the fast Opus path up to ``end`` (and the header's length)."""
        blocks = opus_frames(self.handle.name, self.channels, self.sample_rate)
        position, end = 0, min(end, self.frames)
        try:
            for block in blocks or ():
                block = block[: int(end - position)]
                position += len(block)
                yield block
                if position >= end:
                    return
        except Exception as error:  # a damaged packet, a demuxer error: libsndfile goes on
            log.debug("%s: libopus stopped at %d (%s)", self.handle.name, position, error)
        finally:
            if blocks is not None:
                blocks.close()  # closes the container

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


class AVSource(Source):
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


def opus_frames(path: str, channels: int, rate: int) -> Iterator[np.ndarray] | None:
    """(n, channels) float32 blocks of an Ogg Opus file from its start at ``rate`` Hz, by PyAV's
    demuxer and libopus (pre-skip and output gain applied, as libsndfile does; the caller trims
    the end to the header's length); None where this path does not apply. A packet libopus
    rejects ends the iteration with ValueError (the caller goes on with libsndfile from there)."""
    if libopus.library() is None or rate not in libopus.RATES:
        return None
    try:
        import av

        container = av.open(path, metadata_errors="ignore")
    except Exception:
        return None
    try:
        stream = container.streams.audio[0]
        # OpusHead: "OpusHead", version, channels, pre-skip (u16, 48 kHz samples), input rate
        # (u32), output gain (s16, Q7.8 dB), channel mapping family (0: mono or stereo)
        head = bytes(stream.codec_context.extradata or b"")
        if len(head) < 19 or not head.startswith(b"OpusHead") or (head[9], head[18]) != (
            channels, 0
        ):  # fmt: skip
            raise ValueError("not a mono or stereo Opus stream")
        skip = int.from_bytes(head[10:12], "little") * rate // OPUS_RATE
        decoder = libopus.Decoder(
            rate, channels, int.from_bytes(head[16:18], "little", signed=True)
        )
    except Exception:
        container.close()
        return None
    return _opus_blocks(container, stream, decoder, skip)


def _opus_blocks(container, stream, decoder: libopus.Decoder, skip: int) -> Iterator[np.ndarray]:
    """Blocks of about ``BLOCK_FRAMES``, decoded in place, less the first ``skip`` frames (the
    pre-skip is a u16 at 48 kHz: never more than the first block)."""
    room = BLOCK_FRAMES + decoder.max_frames  # a packet always fits after fewer than BLOCK_FRAMES
    block, held = np.empty((room, decoder.channels), np.float32), 0
    try:
        for packet in container.demux(stream):
            if packet.size:  # the last one is the demuxer's empty flush packet
                held += decoder.decode_into(bytes(packet), block[held:])
            if held >= BLOCK_FRAMES:
                yield block[skip:held]
                skip, block, held = 0, np.empty((room, decoder.channels), np.float32), 0
        if held > skip:
            yield block[skip:held]
    finally:
        decoder.close()
        container.close()
