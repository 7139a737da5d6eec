"""libopus called directly, for :mod:`genretag.data.sources`' Ogg Opus path.

FFmpeg's libopus wrapper hands PyAV one frame of 20 ms at a time to convert, and always decodes
at 48 kHz. Called directly, libopus decodes each packet into a block in place, at the rate
libsndfile decodes the file at: 2.2x libsndfile's speed, 1.2x the wrapper's
(``benchmarks/decode.py --real``). Decoding a 48 kHz stream at 24 kHz for a 16 kHz model was
measured too: 0.96-1.04x, not worth a second rate. 16 kHz straight from libopus is not the same
signal (its band limit at 8 kHz is not soxr's anti-aliasing filter; a trained model's scores moved
by up to 0.04).

The library is the libopus that PyAV's wheel bundles (the one FFmpeg decodes with), else the
system's. Only mono and stereo streams (channel mapping family 0) are decoded here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import numpy as np

RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # what libopus can decode to
MAX_PACKET_MS = 120  # the longest an Opus packet lasts
_OPUS_SET_GAIN = 4034  # OPUS_SET_GAIN_REQUEST in opus_defines.h


def _candidates() -> list[str]:
    found = []
    try:
        import av

        package = Path(av.__file__).parent
        for folder, pattern in [
            (package.parent / "av.libs", "libopus*.so*"),  # Linux wheels (auditwheel)
            (package / ".dylibs", "libopus*.dylib"),  # macOS wheels (delocate)
            (package.parent / "av.libs", "opus*.dll"),  # Windows wheels (delvewheel)
        ]:
            found += sorted(str(p) for p in folder.glob(pattern))
    except ImportError:
        pass
    system = ctypes.util.find_library("opus")
    return [*found, *([system] if system else [])]


@functools.cache
def library() -> ctypes.CDLL | None:
    """libopus with its decoder's signatures declared, or None where none can be loaded."""
    for candidate in _candidates():
        try:
            lib = ctypes.CDLL(candidate)
            lib.opus_decoder_create.restype = ctypes.c_void_p
            lib.opus_decoder_create.argtypes = [
                ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
            ]  # fmt: skip
            lib.opus_decode_float.restype = ctypes.c_int
            lib.opus_decode_float.argtypes = [
                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int,
                ctypes.c_int,
            ]  # fmt: skip
            lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_strerror.restype = ctypes.c_char_p
        except (OSError, AttributeError):
            continue
        return lib
    return None


class Decoder:
    """One mono or stereo Opus stream at ``rate`` Hz, with the header's output gain (Q7.8 dB)."""

    def __init__(self, rate: int, channels: int, gain: int = 0) -> None:
        self._state = None
        lib = library()
        if lib is None or rate not in RATES or channels not in (1, 2):
            raise ValueError(f"libopus cannot decode {channels} channels at {rate} Hz here")
        self._lib, self.channels = lib, channels
        self.max_frames = rate * MAX_PACKET_MS // 1000
        error = ctypes.c_int()
        self._state = lib.opus_decoder_create(rate, channels, ctypes.byref(error))
        if not self._state or error.value:
            raise ValueError(f"libopus: {lib.opus_strerror(error.value).decode()}")
        if gain:  # variadic: opus_decoder_ctl(st, OPUS_SET_GAIN_REQUEST, opus_int32 gain)
            code = lib.opus_decoder_ctl(
                ctypes.c_void_p(self._state), ctypes.c_int(_OPUS_SET_GAIN), ctypes.c_int32(gain)
            )
            if code:
                self.close()
                raise ValueError(f"libopus: output gain {gain}: {lib.opus_strerror(code).decode()}")

    def decode_into(self, packet: bytes, out: np.ndarray) -> int:
        """Decode one packet into ``out`` ((n, channels) float32, C-contiguous, n at least
        ``max_frames``); the frames written. A packet libopus rejects raises ValueError."""
        if (
            out.dtype != np.float32
            or out.shape[1:] != (self.channels,)
            or len(out) < self.max_frames
            or not out.flags.c_contiguous
        ):
            raise ValueError(f"no room for an Opus packet in a {out.dtype} array {out.shape}")
        n = self._lib.opus_decode_float(
            self._state, packet, len(packet), out.ctypes.data, self.max_frames, 0
        )
        if n < 0:
            raise ValueError(f"libopus: {self._lib.opus_strerror(n).decode()}")
        return n

    def close(self) -> None:
        if self._state:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
