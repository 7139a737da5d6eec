"""What the machine offers this process, and the defaults that follow from it.

The one place that decides the device, the decoding workers, the batch size and the inference
threads of every command that scores audio (``tag``, the beets plugin, ``embed``, self-training,
the cluster runner), so they all run a library the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from genretag.errors import ConfigError


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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


def default_workers(on: torch.device) -> int:
    """Decoding processes: all cores but one feed a GPU; on the CPU, where inference is the
    bottleneck, a quarter of the cores (at least one)."""
    cores = available_cores()
    return min(16, cores - 1) if on.type == "cuda" else max(1, cores // 4)


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
