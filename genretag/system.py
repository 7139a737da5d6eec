"""What the machine offers this process, and the defaults that follow from it.

The one place that decides the device, the arithmetic (``--precision auto``), the decoding
workers, the batch size and the inference threads of every command that scores audio (``tag``,
the beets plugin, ``embed``, self-training, the cluster runner), from the machine the code runs
on, so they all run a library the same way.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Collection, Iterator
from typing import Literal

import torch

from genretag.errors import ConfigError

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
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
    * ``int8`` is never chosen: dynamic int8 quantizes the GRU and linear layers only, which
      measured no faster than fp32 (the convolutions dominate).
    * a GPU: ``fp32`` (as trained; tagging there waits on the CPU's decoding, not the model).

    ``capability``, ``flags`` and ``bf16_kernels`` default to this machine's (tests fake them).
    """
    if on.type != "cpu":
        return "fp32"
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    flags = cpu_flags() if flags is None else flags
    if bf16_kernels is None:
        bf16_kernels = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    native_bf16 = any(flag in flags for flag in BF16_FLAGS)
    if native_bf16 and bf16_kernels and capability.startswith("AVX512"):
        return "bf16" if getattr(trunk, "auto_bf16", True) else "fp32"
    return "fp32"


def default_workers(on: torch.device, cores: int | None = None) -> int:
    """Decoding processes when ``--workers`` is not given.

    With a GPU the model is rarely the bottleneck: all cores but one decode (at most 16). On the
    CPU, decoding and the model cost about the same per audio second (Opus: about 1/340
    core-seconds to decode and resample; the default CRNN's forward 1/275 in bf16, 1/180 in fp32
    on one Sapphire Rapids core), so half the cores decode and the other half run the model. On
    2 cores, 2 decoders beside 1 inference thread tagged 4 h of real Opus 0.91x as fast with the
    default CRNN and 1.02-1.12x with the demo model (benchmarks/tagging.py --tag-workers 2).
    """
    cores = available_cores() if cores is None else cores
    if on.type == "cuda":
        return max(1, min(16, cores - 1))
    return max(1, cores // 2)


def default_batch_size(on: torch.device) -> int:
    """Windows per inference batch: 64 on a GPU, 8 on the CPU."""
    return 64 if on.type == "cuda" else 8


def cpu_threads(workers: int) -> int:
    """Torch threads for inference on CPU: the cores the decoding workers leave free.

    Two threads fighting decoders for two cores make the GRU's many small ops ~10x slower.
    OMP_NUM_THREADS, when set, wins.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, available_cores() - workers)


@contextlib.contextmanager
def inference_threads(on: torch.device, workers: int) -> Iterator[None]:
    """Within the block, torch uses :func:`cpu_threads` on the CPU; restored after."""
    threads = torch.get_num_threads()
    if on.type == "cpu":
        torch.set_num_threads(cpu_threads(workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
