"""Training throughput of the fma_small CRNN from audio already on the device (the model-bound rate).

    python benchmarks/step.py [--quick] [--batch 64] [--seconds 10] [--no-compile]

What is timed is ``TaggingTask.training_step`` as a real ``pl.Trainer`` fit takes it, with the
model settings of configs/fma_small.yaml (mixup 0.2, SpecAugment) and the task's own
``configure_optimizers`` (AdamW + one-cycle schedule): mixup, log-mel front-end (fp32),
SpecAugment, CRNN trunk, head, BCE loss, backward, optimizer step and scheduler step. A callback
takes the time from ``on_train_batch_start`` to ``on_train_batch_end`` (CUDA synchronised) and
the median after ``warmup`` steps is reported. The synthetic batches (random (B, T) audio and
multi-hot targets, in genretag.data.datasets.Batch form) are made on the device before the fit,
so loading and host-to-device copies are not in the figure (see loader.py for those).

Variants: precision ``32-true`` (fp32) and ``bf16-mixed`` (bf16), each also with
``torch.compile`` of the trunk and head (the front-end stays eager: nnAudio); a compile that
fails (no C++ compiler on a CPU box, ...) is skipped and the reason reported.

``loop_without_trainer``: the figure this script used to report, a hand-written loop (front-end,
SpecAugment, trunk, head, BCE, AdamW; no mixup, no scheduler, no Lightning) on the same model, in
the same run, to show what the Trainer and mixup add. ``frontend_share`` = time of the
front-end's forward alone / median time of the Trainer step. Device: CUDA when present, else CPU.
Prints one JSON object, then a one-line summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

from genretag.data.datasets import Batch
from genretag.task import TaggingTask

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fma_small.yaml"
LABELS = [f"genre{i}" for i in range(8)]  # fma_small: 8 root genres
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per call of ``fn``: ``warmup`` calls, then ``steps`` timed ones (GPU synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


class StepTimer(pl.Callback):
    """Wall time of each training batch, ``on_train_batch_start`` -> ``on_train_batch_end``.

    That span holds ``training_step``, backward, the optimizer step and the step-interval
    scheduler step (Lightning steps the scheduler before ``on_train_batch_end``).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        self.seconds.append(time.perf_counter() - self._start)


class Batches(torch.utils.data.Dataset):
    """``count`` items cycling over 2 ready-made Batch dicts: audio (B, T), target (B, C)."""

    def __init__(self, batch: int, samples: int, count: int, device: torch.device) -> None:
        self.count = count
        self.items: list[Batch] = [
            {
                "audio": 0.1 * torch.randn(batch, samples, device=device),
                "target": (torch.rand(batch, len(LABELS), device=device) < 0.2).float(),
                "key": [f"{k}-{i}" for i in range(batch)],
                "bad": [],
                "truncated": [],
            }
            for k in range(2)
        ]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Batch:
        return self.items[index % len(self.items)]


def model_settings() -> dict[str, Any]:
    """The ``model:`` section of configs/fma_small.yaml."""
    return yaml.safe_load(CONFIG.read_text())["model"]


def trainer_step(
    settings: dict[str, Any], precision: str, compiled: bool, data: Batches,
    device: torch.device, warmup: int,
) -> dict[str, Any]:  # fmt: skip
    """Median seconds of a real Trainer's training batch after ``warmup``, over the rest."""
    torch.manual_seed(0)
    model = TaggingTask(labels=LABELS, **settings)
    if compiled:
        model.trunk.compile()
        model.head.compile()
    timer = StepTimer(device)
    trainer = pl.Trainer(
        max_steps=len(data), accelerator=device.type, devices=1, precision=precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(model, train_dataloaders=loader)
    timed_steps = timer.seconds[warmup:]
    scheduler = trainer.lr_scheduler_configs[0].scheduler  # the task's OneCycleLR
    per_step = statistics.median(timed_steps)
    audio = data.items[0]["audio"]
    model.to(device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled="bf16" in precision):
        per_frontend = timed(lambda: model.frontend(audio), device, len(timed_steps), 1)
    return {
        "ms_per_step": round(per_step * 1000, 2),
        "clips_per_s": round(len(audio) / per_step, 1),
        "frontend_share": round(per_frontend / per_step, 3),
        "timed_steps": len(timed_steps),
        "scheduler": type(scheduler).__name__,
        "scheduler_steps": scheduler.last_epoch,
    }


def loop_step(
    settings: dict[str, Any], bf16: bool, data: Batches, device: torch.device, steps: int,
    warmup: int,
) -> dict[str, float]:  # fmt: skip
    """The former figure: a hand-written step (no mixup, no scheduler, no Trainer), mean s."""
    torch.manual_seed(0)
    model = TaggingTask(labels=LABELS, **settings).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.get("lr", 1e-3))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    audio, target = data.items[0]["audio"], data.items[0]["target"]

    def step() -> None:
        with autocast:
            logits = model.head(model.trunk(model.augment(model.frontend(audio))))
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    per_step = timed(step, device, steps, warmup)
    return {
        "ms_per_step": round(per_step * 1000, 2),
        "clips_per_s": round(len(audio) / per_step, 1),
    }


def _skipped(error: Exception) -> dict[str, str]:
    return {"skipped": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="batch 2 x 1 s, 1 step, no compile")
    parser.add_argument(
        "--batch", type=int, default=None, help="clips per step (default 64 on a GPU, 8 on CPU)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="window (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    batch = args.batch or (2 if args.quick else (64 if cuda else 8))
    seconds = args.seconds or (1.0 if args.quick else 10.0)
    steps = args.steps or (1 if args.quick else (20 if cuda else 3))
    warmup = 1 if args.quick else (5 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    settings = model_settings()
    torch.manual_seed(0)
    data = Batches(batch, round(seconds * 16_000), warmup + steps, device)
    result: dict = {
        "benchmark": "step",
        "quick": args.quick,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "seconds": seconds,
        "steps": steps,
        "warmup": warmup,
        "model": "configs/fma_small.yaml model settings",
        "model_args": settings,
        "timed": "pl.Trainer fit: TaggingTask.training_step (mixup, SpecAugment) + backward + "
        "AdamW + OneCycleLR step; median of on_train_batch_start -> on_train_batch_end",
        "variants": {},
        "loop_without_trainer": {
            "timed": "the former figure: front-end, SpecAugment, trunk, head, BCE, AdamW by "
            "hand; no mixup, scheduler or Lightning; mean after warmup",
        },
    }
    compile_modes = [False] if (args.quick or args.no_compile) else [False, True]
    if len(compile_modes) == 1:
        result["compile_skipped"] = "--quick" if args.quick else "--no-compile"
    for compiled in compile_modes:
        for short, precision in PRECISIONS.items():
            name = f"{short}{'_compiled' if compiled else ''}"
            try:
                result["variants"][name] = trainer_step(
                    settings, precision, compiled, data, device, warmup
                )
            except Exception as error:  # compile needs a C++ toolchain (CPU) or Triton (GPU)
                if not compiled:
                    raise
                result["variants"][name] = _skipped(error)
            finally:
                torch._dynamo.reset() if compiled else None
    for short in PRECISIONS:
        result["loop_without_trainer"][short] = loop_step(
            settings, short == "bf16", data, device, steps, warmup
        )
    best = max((v["clips_per_s"], k) for k, v in result["variants"].items() if "clips_per_s" in v)
    result["best"] = {"variant": best[1], "clips_per_s": best[0]}
    if cuda:
        bf16 = max(
            (v["clips_per_s"], k)
            for k, v in result["variants"].items()
            if k.startswith("bf16") and "clips_per_s" in v
        )
        result["targets"] = {
            "clips_per_s_bf16": {"target": 5000, "measured": bf16[0], "variant": bf16[1]},
            "frontend_share": {
                "target": 0.15,
                "measured": result["variants"][bf16[1]]["frontend_share"],
            },
        }
    print(json.dumps(result))
    figures = ", ".join(
        f"{k} {v['clips_per_s']}/s (front-end {v['frontend_share']:.0%})"
        if "clips_per_s" in v
        else f"{k} skipped"
        for k, v in result["variants"].items()
    )
    loop = result["loop_without_trainer"]
    print(
        f"# Trainer step, fma_small model, {batch} x {seconds:g} s on {result['device']}: "
        f"{figures}; hand-written loop fp32 {loop['fp32']['clips_per_s']}/s, "
        f"bf16 {loop['bf16']['clips_per_s']}/s",
        flush=True,
    )


if __name__ == "__main__":
    with contextlib.suppress(AttributeError):
        torch.set_float32_matmul_precision("high")
    main()
