"""What the machine offers this process, and the defaults that follow from it.

The one place that decides the device, the arithmetic (``--precision auto``), the decoding
workers, the batch size and the inference threads of every command that scores audio (``tag``,
the beets plugin, ``embed``, self-training, the cluster runner), from the machine the code runs
on, so they all run a library the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Collection, Iterator
from typing import Literal

import torch

from genretag.errors import ConfigError

Precision = Literal["fp32", "bf16", "int8", "onnx"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8", "onnx")
# /proc/cpuinfo flags of native bf16 arithmetic: AMX tiles (Sapphire Rapids and later) or
# AVX512-BF16 (Cooper Lake, Zen 4). Without them oneDNN emulates bf16 (AVX512-core) or has no
# kernel at all (AVX2): measured ~15x slower than fp32 on an AVX2 machine.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def device(spec: str = "auto", setting: str = "--device") -> torch.device:
    """``auto`` (a GPU when present, this rank's under torchrun), or the device ``spec`` names;
    ConfigError naming ``setting`` when it does not exist here."""
    if spec != "auto":
        try:
            chosen = torch.device(spec)
        except RuntimeError as error:
            raise ConfigError(f"{setting} {spec}: {error}") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{setting} {spec}: no CUDA GPU here; use cpu (or auto)")
        return chosen
    if torch.cuda.is_available():
        return torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
        )
    return torch.device("cpu")


def precision(spec: str) -> Precision | Literal["auto"]:
    """``--precision``, checked; ``auto`` is resolved for each network as it is loaded
    (genretag.inference.load_predictor, by :func:`choose_precision`)."""
    if spec == "auto":
        return "auto"
    if spec not in PRECISIONS:
        raise ConfigError(f"--precision {spec}: choose auto or one of {', '.join(PRECISIONS)}")
    return spec  # type: ignore[return-value]


def choose_precision(
    on: torch.device,
    capability: str | None = None,
    flags: Collection[str] | None = None,
    bf16_kernels: bool | None = None,
    trunk: object = None,
    onnx: bool | None = None,
) -> Precision:
    """The arithmetic ``--precision auto`` runs a model in on ``on``, from the machine and the
    model's ``trunk``.

    * CPU with native bf16 (``BF16_FLAGS``), torch dispatched for AVX-512 and oneDNN bf16
      kernels: ``bf16`` (the default CRNN's forward 1.45x faster per core on Sapphire Rapids,
      top-1 equal to fp32), unless the trunk sets ``auto_bf16 = False``: musicnn's published
      networks, whose bf16 scores left fp32's top genre on 1% (autocast) to 3% (cast whole) of
      293 real files.
    * any other CPU (AVX2 only, AVX-512 without BF16, ARM): ``fp32``; bf16 there is emulated
      or has no kernel (~15x slower on AVX2).
    * wherever that gives ``fp32`` on the CPU, ONNX Runtime is installed (``onnx``, the
      ``genretag[onnx]`` extra) and the trunk sets ``auto_onnx = True``: ``onnx``, the same fp32
      arithmetic in ONNX Runtime's kernels. Set by musicnn's published network
      (MusicnnOriginal): ``tag --ckpt musicnn-msd`` ran 1.10-1.14x faster on an AVX2 EPYC. Not
      by the CRNN, whose forward ONNX Runtime ran only 1.06x faster there, which the export at
      start-up takes back.
    * ``int8`` is never chosen: dynamic int8 quantizes the GRU and linear layers only, which
      measured no faster than fp32 (the convolutions dominate).
    * a GPU: ``fp32`` (as trained; tagging there waits on the CPU's decoding, not the model).

    ``capability``, ``flags``, ``bf16_kernels`` and ``onnx`` default to this machine's (tests
    fake them).
    """
    if on.type != "cpu":
        return "fp32"
    if onnx is None:
        from genretag.onnx_trunk import available

        onnx = available()
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    flags = cpu_flags() if flags is None else flags
    if bf16_kernels is None:
        bf16_kernels = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    native_bf16 = any(flag in flags for flag in BF16_FLAGS)
    fast_bf16 = native_bf16 and bf16_kernels and capability.startswith("AVX512")
    if fast_bf16 and getattr(trunk, "auto_bf16", True):
        return "bf16"
    return "onnx" if onnx and getattr(trunk, "auto_onnx", False) else "fp32"


def default_workers(on: torch.device, cores: int | None = None) -> int:
    """Decoding processes when ``--workers`` is not given.

    With a GPU the model is rarely the bottleneck: all cores but one decode (at most 16) and
    the main process runs the model. On the CPU each worker decodes and runs the model on what
    it decoded (genretag.tagger.stream), so one worker per core keeps every core busy. The
    earlier split, half the cores decoding and the other half running the model, left a core
    idle whenever one side waited: 0.66 of 2 cores busy on 4 h of real Opus tracks, against 0.82
    now (benchmarks/tagging.py, both on one AVX2 machine).
    """
    cores = available_cores() if cores is None else cores
    if on.type == "cuda":
        return max(1, min(16, cores - 1))
    return max(1, cores)


def default_batch_size(on: torch.device) -> int:
    """Windows per inference batch: 64 on a GPU, 8 on the CPU."""
    return 64 if on.type == "cuda" else 8


def cpu_threads(workers: int) -> int:
    """Torch threads of the main process on the CPU: the cores the workers leave free (all of
    them with ``--workers 0``, where it decodes and scores alone). Each worker scores on one
    thread (genretag.tagger.stream): threads beyond the free cores would fight the workers, and
    made the GRU's many small ops ~10x slower. OMP_NUM_THREADS, when set, wins.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, available_cores() - workers)


# glibc's mallopt parameters and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65_536


def _glibc_mallopt(setting: int, value: int) -> bool:
    """glibc's ``mallopt``; False where the C library is not glibc (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(setting, value))


def keep_freed_memory(keep: bool = True) -> bool:
    """Reuse freed memory for the next batch instead of giving it back to the OS (glibc only).

    A CPU forward allocates and frees its activations on every batch: 100+ MB for the default
    CRNN's 8 windows of 10 s. glibc maps each block over 32 MB afresh and unmaps it when freed,
    so every batch paid the kernel to map and zero those pages again: 21-22% of ``tag``'s CPU
    time with the default CRNN on an AVX2 machine. With blocks served from the heap and the
    heap kept, the process keeps its peak (which it needed anyway), and the default CRNN
    tagged 8 real tracks 1.40x faster there. ``keep=False`` restores glibc's defaults and returns the kept memory. Returns whether
    the setting took (False where the C library is not glibc).
    """
    if keep:
        return _glibc_mallopt(_M_MMAP_MAX, 0) and _glibc_mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    done = _glibc_mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    done = _glibc_mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM) and done
    if done:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return done


@contextlib.contextmanager
def inference_threads(on: torch.device, workers: int) -> Iterator[None]:
    """Within the block, torch uses :func:`cpu_threads` on the CPU and freed memory is kept for
    reuse (:func:`keep_freed_memory`); both restored after."""
    threads = torch.get_num_threads()
    kept = on.type == "cpu" and keep_freed_memory()
    if on.type == "cpu":
        torch.set_num_threads(cpu_threads(workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if kept:
            keep_freed_memory(False)
