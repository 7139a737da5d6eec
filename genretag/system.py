"""What the machine offers this process: its cores, its CPU's instruction sets, the fastest
arithmetic for inference there."""

from __future__ import annotations

import functools
import os
from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from genretag.inference import Precision

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


def default_workers(device: torch.device, cores: int | None = None) -> int:
    """Decoding processes for ``tag`` when ``--workers`` is not given.

    With a GPU the model is rarely the bottleneck: all cores but one decode (at most 16). On the
    CPU, decoding and the model cost about the same per audio second (Opus: 1/243 core-seconds
    to decode and resample; the default CRNN's forward 1/275 in bf16, 1/180 in fp32 on one
    Sapphire Rapids core), so half the cores decode and the other half run the model.
    """
    cores = available_cores() if cores is None else cores
    if device.type == "cuda":
        return max(1, min(16, cores - 1))
    return max(1, cores // 2)


def cpu_capability() -> str:
    """What torch's CPU kernels were dispatched for here: ``AVX512``, ``AVX2``, ``DEFAULT``..."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def choose_precision(
    device: torch.device,
    capability: str | None = None,
    flags: Collection[str] | None = None,
    bf16_kernels: bool | None = None,
) -> Precision:
    """The arithmetic ``--precision auto`` runs a model in on ``device``, from the machine.

    * CPU with native bf16 (``BF16_FLAGS``), torch dispatched for AVX-512 and oneDNN bf16
      kernels: ``bf16`` (the default CRNN's forward 1.45x faster per core on Sapphire Rapids,
      top-1 equal to fp32).
    * any other CPU (AVX2 only, AVX-512 without BF16, ARM): ``fp32``; bf16 there is emulated
      or has no kernel (~15x slower on AVX2).
    * ``int8`` is never chosen: dynamic int8 quantizes the GRU and linear layers only, which
      measured no faster than fp32 (the convolutions dominate).
    * a GPU: ``fp32`` (as trained; tagging there waits on the CPU's decoding, not the model).

    ``capability``, ``flags`` and ``bf16_kernels`` default to this machine's (tests fake them).
    """
    if device.type != "cpu":
        return "fp32"
    capability = cpu_capability() if capability is None else capability
    flags = cpu_flags() if flags is None else flags
    if bf16_kernels is None:
        import torch

        bf16_kernels = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    native_bf16 = any(flag in flags for flag in BF16_FLAGS)
    if native_bf16 and bf16_kernels and capability.startswith("AVX512"):
        return "bf16"
    return "fp32"
