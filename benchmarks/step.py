"""Training throughput of the default CRNN from audio already in memory (the model-bound rate).

    python benchmarks/step.py [--quick] [--batch 64] [--seconds 10] [--no-compile]

One training step as TaggingTask takes it (log-mel front-end in fp32, SpecAugment, CRNN trunk,
head, BCE loss, backward, AdamW step) on random 16 kHz audio already on the device, in fp32 and
in bf16-mixed (autocast), each with and without ``torch.compile`` of the trunk and head (the
front-end stays eager: nnAudio). A compile that fails (no C++ compiler on a CPU box, ...) is
skipped and the reason reported. ``frontend_share`` = time of the front-end's forward alone /
time of the whole step. Device: CUDA when present, else CPU. Prints one JSON object, then a
one-line summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from genretag.task import TaggingTask

LABELS = [f"genre{i}" for i in range(16)]


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


def measure(
    model: TaggingTask, body: torch.nn.Module, audio: torch.Tensor, target: torch.Tensor,
    bf16: bool, steps: int, warmup: int,
) -> dict[str, float]:  # fmt: skip
    """Seconds per training step and per front-end forward, after ``warmup`` steps."""
    device = audio.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            logits = body(model.augment(model.frontend(audio)))
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    per_step = timed(step, device, steps, warmup)
    with torch.no_grad(), autocast:
        per_frontend = timed(lambda: model.frontend(audio), device, steps, 1)
    return {
        "ms_per_step": round(per_step * 1000, 2),
        "clips_per_s": round(len(audio) / per_step, 1),
        "frontend_share": round(per_frontend / per_step, 3),
    }


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
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(batch, round(seconds * 16_000), device=device)
    target = (torch.rand(batch, len(LABELS), device=device) < 0.2).float()
    result: dict = {
        "benchmark": "step",
        "quick": args.quick,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "seconds": seconds,
        "model": "TaggingTask defaults: CRNN 64/128/128/128, 2x128 BiGRU, 96 mels",
        "variants": {},
    }
    compile_modes = [False] if (args.quick or args.no_compile) else [False, True]
    if len(compile_modes) == 1:
        result["compile_skipped"] = "--quick" if args.quick else "--no-compile"
    for compiled in compile_modes:
        for bf16 in (False, True):
            name = f"{'bf16' if bf16 else 'fp32'}{'_compiled' if compiled else ''}"
            model = TaggingTask(labels=LABELS).to(device)
            body: torch.nn.Module = torch.nn.Sequential(model.trunk, model.head)
            if compiled:
                body = torch.compile(body)
            try:
                result["variants"][name] = measure(model, body, audio, target, bf16, steps, warmup)
            except Exception as error:  # compile needs a C++ toolchain (CPU) or Triton (GPU)
                if not compiled:
                    raise
                reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
                result["variants"][name] = {"skipped": reason}
            finally:
                torch._dynamo.reset() if compiled else None
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
    print(f"# train step {batch} x {seconds:g} s on {result['device']}: {figures}", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(AttributeError):
        torch.set_float32_matmul_precision("high")
    main()
