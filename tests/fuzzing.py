"""Damaged audio for the decoder fuzz tests: valid sources, seeded mutations, a crash-proof runner.

:func:`write_sources` writes short valid clips in every format the decoder reads; :func:`mutate`
damages one (bit flips, truncations, zeroed or random headers, spliced regions, and header fields
set to absurd values such as a WAV data size of 0x7FFFFFFF or a FLAC total-samples field of
2^36 - 1); :class:`DecodeRunner` decodes files in worker processes (tests/decode_worker.py) and
kills and replaces a worker that crashes or hangs, so each such file is reported by name.
"""

from __future__ import annotations

import json
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf

T = TypeVar("T")
WORKER = Path(__file__).with_name("decode_worker.py")
# (name, format, subtype, sample rate, channels): every container and codec path the decoder has
SOURCES: list[tuple[str, str, str | None, int, int]] = [
    ("mp3_44k_stereo", "MP3", None, 44_100, 2),
    ("mp3_22k_mono", "MP3", None, 22_050, 1),
    ("mp3_8k_mono", "MP3", None, 8_000, 1),
    ("flac_44k_stereo", "FLAC", "PCM_16", 44_100, 2),
    ("flac_48k_mono24", "FLAC", "PCM_24", 48_000, 1),
    ("ogg_32k_mono", "OGG", "VORBIS", 32_000, 1),
    ("ogg_44k_stereo", "OGG", "VORBIS", 44_100, 2),
    ("opus_48k_stereo", "OGG", "OPUS", 48_000, 2),
    ("wav_44k_stereo16", "WAV", "PCM_16", 44_100, 2),
    ("wav_16k_monofloat", "WAV", "FLOAT", 16_000, 1),
    ("m4a_44k_stereo", "M4A", None, 44_100, 2),
]
EXTENSIONS = {"MP3": "mp3", "FLAC": "flac", "OGG": "ogg", "WAV": "wav", "M4A": "m4a"}


def _signal(seconds: float, sr: int, channels: int) -> np.ndarray:
    """Tones with onsets and a little noise: (T, channels) float32."""
    rng = np.random.default_rng(sr + channels)
    t = np.arange(round(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    x += 0.05 * rng.standard_normal(len(t)) * (np.mod(t, 0.4) < 0.05)
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def _write_m4a(path: Path, x: np.ndarray, sr: int) -> None:
    import av

    layout = "stereo" if x.shape[1] == 2 else "mono"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sr, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout=layout)
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


def write_sources(folder: Path, seconds: float = 2.5) -> dict[str, Path]:
    """One valid clip per entry of SOURCES in ``folder``: {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fmt, subtype, sr, channels in SOURCES:
        path = folder / f"{name}.{EXTENSIONS[fmt]}"
        x = _signal(seconds, sr, channels)
        if fmt == "M4A":
            _write_m4a(path, x, sr)
        else:
            sf.write(path, x, sr, format=fmt, subtype=subtype)
        paths[name] = path
    return paths


# -- mutations --------------------------------------------------------------------------------------
Mutation = Callable[[bytearray, np.random.Generator], str]


def _flip_bits(data: bytearray, rng: np.random.Generator) -> str:
    count = _pick(rng, [1, 4, 32, 256])
    for bit in rng.integers(0, len(data) * 8, count):
        data[bit // 8] ^= 1 << int(bit % 8)
    return f"flip {count} bits"


def _truncate(data: bytearray, rng: np.random.Generator) -> str:
    # half anywhere, half inside the first KiB where the headers are
    end = int(rng.integers(1, len(data))) if rng.random() < 0.5 else int(rng.integers(1, 1024))
    del data[end:]
    return f"truncate at {end}"


def _header(data: bytearray, rng: np.random.Generator) -> str:
    count = int(rng.integers(4, 1024))
    if rng.random() < 0.5:
        data[:count] = bytes(count)
        return f"zero the first {count} bytes"
    data[:count] = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    return f"random first {count} bytes"


def _region(data: bytearray, rng: np.random.Generator) -> str:
    start = int(rng.integers(0, len(data)))
    size = int(rng.integers(1, 4096))
    kind = _pick(rng, ["zero", "random", "delete", "duplicate"])
    chunk = data[start : start + size]
    if kind == "zero":
        data[start : start + size] = bytes(len(chunk))
    elif kind == "random":
        data[start : start + size] = rng.integers(0, 256, len(chunk), dtype=np.uint8).tobytes()
    elif kind == "delete":
        del data[start : start + size]
    else:
        data[start:start] = chunk
    return f"{kind} {size} bytes at {start}"


def _pick(rng: np.random.Generator, values: list[T]) -> T:
    return values[int(rng.integers(len(values)))]


ABSURD_32 = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF]


def _put32(data: bytearray, at: int, value: int, big: bool = False) -> None:
    if 0 <= at <= len(data) - 4:
        data[at : at + 4] = struct.pack(">I" if big else "<I", value)


def _wav_fields(data: bytearray, rng: np.random.Generator) -> str:
    fmt, chunk = data.find(b"fmt "), data.find(b"data")
    fields = {
        "RIFF size": (4, 4, ABSURD_32),
        "data size": (chunk + 4, 4, [0, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FFFFFFF]),
        "channels": (fmt + 10, 2, [0, 255, 0xFFFF]),
        "sample rate": (fmt + 12, 4, [0, 1, 0x7FFFFFFF, 0xFFFFFFFF]),
        "block align": (fmt + 20, 2, [0, 1, 0xFFFF]),
        "bits per sample": (fmt + 22, 2, [0, 7, 64, 0xFFFF]),
        "format tag": (fmt + 8, 2, [0, 2, 0xFFFE, 0x55]),
    }
    name = _pick(rng, list(fields))
    at, size, values = fields[name]
    value = _pick(rng, values)
    data[at : at + size] = value.to_bytes(size, "little")
    return f"WAV {name} = {value:#x}"


def _flac_fields(data: bytearray, rng: np.random.Generator) -> str:
    # STREAMINFO at 8: block sizes (2+2), frame sizes (3+3), then 64 bits: rate(20) ch-1(3)
    # bps-1(5) total samples(36).
    packed = int.from_bytes(data[18:26], "big")
    rate, rest = packed >> 44, packed & ((1 << 44) - 1)
    channels, bps, total = (rest >> 41) & 7, (rest >> 36) & 31, rest & ((1 << 36) - 1)
    name = _pick(rng, ["total samples", "sample rate", "channels", "bits", "block size", "length"])
    if name == "total samples":
        total = _pick(rng, [(1 << 36) - 1, 1, 0])
        value = total
    elif name == "sample rate":
        rate = _pick(rng, [0, 1, (1 << 20) - 1])
        value = rate
    elif name == "channels":
        channels = value = 7
    elif name == "bits":
        bps = value = _pick(rng, [0, 31])
    elif name == "block size":
        value = _pick(rng, [0, 1, 0xFFFF])
        data[8:12] = struct.pack(">HH", value, value)
    else:  # the metadata block's declared length
        value = _pick(rng, [0, 0xFFFFFF])
        data[5:8] = value.to_bytes(3, "big")
    if name in ("total samples", "sample rate", "channels", "bits"):
        packed = rate << 44 | channels << 41 | bps << 36 | total
        data[18:26] = packed.to_bytes(8, "big")
    return f"FLAC {name} = {value:#x}"


def _mp3_fields(data: bytearray, rng: np.random.Generator) -> str:
    xing = max(data.find(b"Xing"), data.find(b"Info"))
    name = _pick(rng, ["Xing frames", "Xing bytes", "ID3 size", "frame headers"])
    if name == "Xing frames" and xing >= 0:
        value = _pick(rng, [0, 1, 0x7FFFFFFF, 0xFFFFFFFF])
        _put32(data, xing + 8, value, big=True)
    elif name == "Xing bytes" and xing >= 0:
        value = _pick(rng, [0, 0xFFFFFFFF])
        _put32(data, xing + 12, value, big=True)
    elif name == "ID3 size":  # an ID3v2 tag that claims to be 256 MiB long
        value = 0x7F7F7F7F
        data[:0] = b"ID3\x04\x00\x00" + value.to_bytes(4, "big") + bytes(64)
    else:  # every frame header's sample-rate or bit-rate index set to a reserved value
        value = 0
        for at in range(len(data) - 3):
            if data[at] == 0xFF and data[at + 1] & 0xE0 == 0xE0 and rng.random() < 0.5:
                data[at + 2] |= 0x0C if rng.random() < 0.5 else 0xF0
                value += 1
        name = "reserved frame-header fields"
    return f"MP3 {name} = {value:#x}"


_OGG_CRC = [0] * 256
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else _r << 1
    _OGG_CRC[_i] = _r & 0xFFFFFFFF


def _ogg_pages(data: bytearray) -> Iterable[tuple[int, int]]:
    """(start, length) of each well-formed Ogg page."""
    at = data.find(b"OggS")
    while 0 <= at and at + 27 <= len(data):
        segments = data[at + 26]
        body = sum(data[at + 27 : at + 27 + segments])
        length = 27 + segments + body
        if at + length > len(data):
            return
        yield at, length
        at = data.find(b"OggS", at + length)


def fix_ogg_crcs(data: bytearray) -> None:
    """Recompute each page's CRC, so damage inside pages reaches the Vorbis decoder."""
    for at, length in _ogg_pages(data):
        data[at + 22 : at + 26] = bytes(4)
        crc = 0
        for byte in data[at : at + length]:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
        data[at + 22 : at + 26] = crc.to_bytes(4, "little")


def _ogg_fields(data: bytearray, rng: np.random.Generator) -> str:
    pages = list(_ogg_pages(data))
    name = _pick(rng, ["last granule", "channels", "sample rate"])
    if name == "last granule" and pages:
        value = _pick(rng, [0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE, 1])
        at = pages[-1][0]
        data[at + 6 : at + 14] = value.to_bytes(8, "little")
    else:
        # the identification header: Vorbis (channels at +11, rate at +12) or Opus (+9, +12)
        ident, channels = data.find(b"\x01vorbis"), 11
        if ident < 0:
            ident, channels = data.find(b"OpusHead"), 9
        if name == "channels":
            value = _pick(rng, [0, 255])
            data[ident + channels] = value
        else:
            value = _pick(rng, [0, 1, 0xFFFFFFFF])
            _put32(data, ident + 12, value)
    fix_ogg_crcs(data)
    return f"OGG {name} = {value:#x}"


def _m4a_fields(data: bytearray, rng: np.random.Generator) -> str:
    name = _pick(rng, ["mdhd duration", "mdhd timescale", "stsz count", "stco count"])
    atom, offset = {
        "mdhd duration": (b"mdhd", 20),
        "mdhd timescale": (b"mdhd", 16),
        "stsz count": (b"stsz", 12),
        "stco count": (b"stco", 8),
    }[name]
    value = _pick(rng, [0, 1, 0x7FFFFFFF, 0xFFFFFFFF])
    at = data.find(atom)
    if at >= 0:
        _put32(data, at + offset, value, big=True)
    return f"M4A {name} = {value:#x}"


FIELDS: dict[str, Mutation] = {
    "WAV": _wav_fields,
    "FLAC": _flac_fields,
    "MP3": _mp3_fields,
    "OGG": _ogg_fields,
    "M4A": _m4a_fields,
}
GENERIC: list[Mutation] = [_flip_bits, _truncate, _header, _region]


def mutate(source: bytes, fmt: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One damaged copy of ``source`` and what was done to it.

    A quarter of the copies get a format-specific absurd header field, the rest one or two
    generic mutations; for Ogg, half of the generic ones are followed by fixing the page CRCs
    (else libogg drops the damaged page and the Vorbis decoder never sees the damage).
    """
    data = bytearray(source)
    if rng.random() < 0.25:
        steps = [FIELDS[fmt](data, rng)]
    else:
        count = 1 if rng.random() < 0.7 else 2
        steps = [GENERIC[int(rng.integers(len(GENERIC)))](data, rng) for _ in range(count)]
        if fmt == "OGG" and rng.random() < 0.5:
            fix_ogg_crcs(data)
            steps.append("fix CRCs")
    if not data:
        data = bytearray(b"\0")
    return bytes(data), "; ".join(steps)


@dataclass
class Case:
    path: Path
    source: str
    what: str


def write_corpus(folder: Path, sources: dict[str, Path], per_source: int, seed: int) -> list[Case]:
    """``per_source`` damaged copies of each source under ``folder`` (seeded, reproducible)."""
    folder.mkdir(parents=True, exist_ok=True)
    formats = {name: fmt for name, fmt, *_ in SOURCES}
    cases = []
    for s, (name, source) in enumerate(sorted(sources.items())):
        original = source.read_bytes()
        rng = np.random.default_rng([seed, s])
        for i in range(per_source):
            data, what = mutate(original, formats[name], rng)
            path = folder / f"{name}-{i:04d}{source.suffix}"
            path.write_bytes(data)
            cases.append(Case(path, name, what))
    return cases


# -- the runner -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What decoding one file did: ``done`` (with the worker's report), ``hang`` or ``crash``."""

    path: str
    status: str
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


class _Worker:
    """One decode_worker.py process; replaced after a crash or a hang."""

    def __init__(self, log: Path, memory_limit: int, script: Path) -> None:
        self.log_path, self.memory_limit, self.script = log, memory_limit, script
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        import resource

        limit = self.memory_limit

        def limit_memory() -> None:  # a decompression bomb fails here, not on the machine
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        log = open(self.log_path, "a")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, str(self.script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            preexec_fn=limit_memory,
        )
        log.close()
        ready = self._read(process, 120.0)
        if ready is None or "ready" not in ready:
            process.kill()
            raise RuntimeError(f"the decode worker did not start; see {self.log_path}")
        return process

    @staticmethod
    def _read(process: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], timeout)
        if not readable:
            return None
        line = process.stdout.readline()
        return json.loads(line) if line else {}

    def decode(self, path: Path, timeout: float, ops: list[str] | None = None) -> Outcome:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        process = self.process
        assert process.stdin is not None
        log_start = self.log_path.stat().st_size
        start = time.perf_counter()
        process.stdin.write(json.dumps({"path": str(path), "ops": ops}) + "\n")
        process.stdin.flush()
        report = self._read(process, timeout)
        seconds = time.perf_counter() - start
        if report:
            return Outcome(str(path), "done", seconds, report)
        if report is None:  # no answer in time: a hang (or a very slow file)
            process.kill()
            process.wait()
            self.process = None
            return Outcome(str(path), "hang", seconds, detail=f"no answer in {timeout:.0f} s")
        code = process.wait()
        self.process = None
        with open(self.log_path, errors="replace") as log:  # what this file made it print
            log.seek(log_start)
            tail = log.read()[-400:]
        return Outcome(str(path), "crash", seconds, detail=f"exit code {code}; stderr: {tail}")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class DecodeRunner:
    """Decode files on ``workers`` processes (one thread each); see :meth:`run`."""

    def __init__(
        self,
        log_dir: Path,
        workers: int = 2,
        timeout: float = 5.0,
        memory_limit: int = 1 << 30,
        script: Path = WORKER,
    ) -> None:
        """
        Args:
            log_dir: where each worker's stderr goes (worker0.log ...).
            workers: processes decoding in parallel.
            timeout: seconds one file may take (all its operations) before its worker is killed.
            memory_limit: address-space limit of each worker, bytes (a worker idles at ~250 MB):
                an allocation a damaged header asks for fails there instead of on the machine.
            script: the worker program (tests/decode_worker.py; other scripts test the runner).
        """
        self.timeout = timeout
        self.workers = [
            _Worker(log_dir / f"worker{i}.log", memory_limit, script) for i in range(workers)
        ]

    def run(self, paths: list[Path], ops: list[str] | None = None) -> list[Outcome]:
        """One Outcome per path, in order; a crash or hang costs one worker restart.

        ``ops``: the decode_worker operations to run on each file (default: all).
        """
        shares = [paths[i :: len(self.workers)] for i in range(len(self.workers))]

        def work(worker: _Worker, share: list[Path]) -> list[Outcome]:
            try:
                return [worker.decode(p, self.timeout, ops) for p in share]
            finally:
                worker.close()

        with ThreadPoolExecutor(len(self.workers)) as pool:
            results = list(pool.map(work, self.workers, shares))
        by_path = {o.path: o for share in results for o in share}
        return [by_path[str(p)] for p in paths]
