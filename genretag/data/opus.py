"""Ogg Opus from its start, faster: PyAV's demuxer and the libopus PyAV ships, at 48 kHz.

libsndfile decodes Opus with a libopus built slower than PyAV's: a whole file here gives the
same samples (largest difference 3e-7 on real recordings, the same length) at 1.7x the speed.
:mod:`genretag.data.audio` uses this for whole-file streams of mono/stereo Ogg Opus (``tag``,
whole-clip decodes) and libsndfile for everything else (crops, seeks, other channel layouts),
so training and ``tag`` still see the same samples.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genretag.data.audio import AV_MAX_BAD_PACKETS, BLOCK_FRAMES, downmix

OPUS_RATE = 48_000  # libsndfile decodes Opus at 48 kHz; so does this path
OPUS_MAX_FRAME = 5_760  # samples per channel in the longest Opus packet (120 ms at 48 kHz)
OPUS_SET_GAIN = 4_034  # opus_decoder_ctl request: the OpusHead output gain, as libsndfile sets it


@functools.cache
def _libopus() -> ctypes.CDLL | None:
    """The libopus PyAV ships (or the system's), or None where there is none."""
    try:
        import av
    except ImportError:
        return None
    libs = Path(av.__file__).parent.parent / "av.libs"
    found = sorted(libs.glob("libopus*.so*")) or [ctypes.util.find_library("opus")]
    try:
        lib = ctypes.CDLL(str(found[0])) if found[0] else None
    except OSError:
        return None
    if lib is not None:
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_void_p]
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decode_float.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int,
            ctypes.c_int,
        ]  # fmt: skip
    return lib


def whole_file(path: Path, frames: int) -> Iterator[np.ndarray] | None:
    """Mono blocks of ``BLOCK_FRAMES`` (the last shorter) of a whole Ogg Opus file at 48 kHz,
    cut to ``frames`` (libsndfile's length, granule positions); None where this path does not
    apply (no libopus, more than 2 channels), and libsndfile decodes the file instead.

    The same libopus arithmetic as libsndfile's (largest difference 3e-7 on real files) at 1.7x
    its speed; a packet libopus rejects is concealed (as players do) and counted as bad.
    """
    lib = _libopus()
    if lib is None:
        return None
    import av

    container = av.open(str(path), metadata_errors="ignore")
    head = bytes(container.streams.audio[0].codec_context.extradata or b"")
    if len(head) < 19 or head[:8] != b"OpusHead" or head[18] != 0 or head[9] not in (1, 2):
        container.close()
        return None
    return _decode_opus(lib, container, head, frames)


def _decode_opus(lib: ctypes.CDLL, container, head: bytes, frames: int) -> Iterator[np.ndarray]:
    channels, pre_skip = head[9], int.from_bytes(head[10:12], "little")
    gain = int.from_bytes(head[16:18], "little", signed=True)
    error = ctypes.c_int()
    decoder = lib.opus_decoder_create(OPUS_RATE, channels, ctypes.byref(error))
    if not decoder:
        container.close()
        raise ValueError(f"libopus cannot decode this stream (error {error.value})")
    try:
        lib.opus_decoder_ctl(ctypes.c_void_p(decoder), OPUS_SET_GAIN, ctypes.c_int(gain))
        buffer = np.empty((BLOCK_FRAMES + OPUS_MAX_FRAME, channels), np.float32)
        filled, skip, left, packets, bad = 0, pre_skip, frames, 0, 0
        for packet in container.demux(container.streams.audio[0]):
            if packet.size == 0:
                continue
            data, packets = bytes(packet), packets + 1
            out = buffer[filled:].ctypes.data
            n = lib.opus_decode_float(decoder, data, len(data), out, OPUS_MAX_FRAME, 0)
            if n < 0:  # a damaged packet: conceal it
                bad += 1
                n = max(0, lib.opus_decode_float(decoder, None, 0, out, OPUS_MAX_FRAME, 0))
            cut = min(skip, n)
            if cut:
                buffer[filled : filled + n - cut] = buffer[filled + cut : filled + n]
            filled, skip = filled + n - cut, skip - cut
            while filled >= BLOCK_FRAMES and left > 0:
                take = min(BLOCK_FRAMES, left)
                yield downmix(buffer[:take])
                left -= take
                buffer[: filled - BLOCK_FRAMES] = buffer[BLOCK_FRAMES:filled]
                filled -= BLOCK_FRAMES
        if packets and bad > AV_MAX_BAD_PACKETS * packets:
            raise ValueError(f"{bad} of {packets} packets are damaged")
        if filled and left > 0:
            yield downmix(buffer[: min(filled, left)])
    finally:
        lib.opus_decoder_destroy(decoder)
        container.close()
