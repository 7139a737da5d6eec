"""Forward speed of musicnn's two published architectures (musicnn, vgg) in genretag, on a CPU.

    python -m benchmarks.musicnn_trunks [--windows 8] [--threads 1] [--repeats 20]

For each architecture (genretag.models.musicnn_original.MusicnnOriginal, the network of
musicnn-msd/-mtt; genretag.models.musicnn_vgg.MusicnnVGG, of musicnn-msd-vgg/-mtt-vgg), a Network
with the musicnn front-end and 50 tags (random weights: the speed does not depend on them) times
``--windows`` windows of 187 frames (2.992 s) in fp32: the trunk alone on the log-mel, as built
(``plain``) and as ``tag`` runs it (``tag``: genretag.inference.for_inference, channels-last on
the CPU), and the whole network (front-end + trunk + head, as ``tag``). Median and best of
``--repeats`` after 3 warm-up runs, as x realtime; the runs are interleaved (one of each in turn),
so a change of load on a shared machine falls on all alike. Prints one JSON object with the load
average and the CPU's flags that matter (avx2, avx512f, avx512_bf16, amx) beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from genretag.inference import for_inference
from genretag.network import Network
from genretag.pretrained.musicnn import LAYOUTS, MSD_LABELS, WINDOW_SECONDS

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu() -> dict:
    """Model name and the flags of FLAGS that /proc/cpuinfo lists."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), "unknown")  # fmt: skip
    return {"model": name, "flags": [f for f in FLAGS if f in flags]}


def timed(runs: dict[tuple[str, str], Callable[[], object]], repeats: int) -> dict:
    """{key: [seconds per run]}, the runs interleaved, after 3 warm-up rounds."""
    times: dict = {key: [] for key in runs}
    with torch.inference_mode():
        for i in range(3 + repeats):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                if i >= 3:
                    times[key].append(time.perf_counter() - start)
    return times


def network(trunk: str) -> Network:
    return Network(labels=MSD_LABELS, window_seconds=WINDOW_SECONDS, frontend="musicnn", n_fft=512,
                   hop_length=256, n_mels=96, f_min=0.0, f_max=8000.0, dropout=0.5,
                   trunk={"class_path": trunk, "init_args": {}}).eval()  # fmt: skip


def forward_args(doc: str) -> argparse.Namespace:
    """The forward benchmarks' options (--windows, --threads, --repeats); torch set to --threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def main() -> int:
    args = forward_args(__doc__)
    torch.manual_seed(0)
    audio = torch.randn(args.windows, round(WINDOW_SECONDS * 16_000)) * 0.1
    seconds = args.windows * WINDOW_SECONDS
    load = [os.getloadavg()]
    result: dict = {}
    runs: dict[tuple[str, str], Callable[[], object]] = {}
    for name, layout in LAYOUTS.items():
        plain = network(layout.trunk)
        fast = for_inference(network(layout.trunk), torch.device("cpu"), "fp32")
        with torch.inference_mode():
            spec = plain.frontend(audio)  # (windows, 96, 187)
        runs[name, "plain"] = lambda net=plain, x=spec: net.trunk(x)
        runs[name, "tag"] = lambda net=fast, x=spec: net.trunk(x)
        runs[name, "network"] = lambda net=fast: net(audio)
        result[name] = {"trunk": layout.trunk.rsplit(".", 1)[1],
                        "parameters": sum(p.numel() for p in plain.trunk.parameters())}  # fmt: skip
    for (name, label), times in timed(runs, args.repeats).items():
        result[name][label] = {
            "median_ms": round(1000 * statistics.median(times), 1),
            "x_realtime_median": round(seconds / statistics.median(times), 1),
            "x_realtime_best": round(seconds / min(times), 1),
        }
    load.append(os.getloadavg())
    result |= {"windows": args.windows, "threads": args.threads, "precision": "fp32",
               "cpu": cpu(), "cores": os.cpu_count(), "torch": torch.__version__,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "loadavg_before_after": [list(map(float, x)) for x in load]}  # fmt: skip
    print(json.dumps(result, indent=1))
    m, v = result["musicnn"]["tag"], result["vgg"]["tag"]
    print(f"# trunk as tag runs it, fp32, {args.threads} thread(s): musicnn "
          f"{m['x_realtime_median']}x, vgg {v['x_realtime_median']}x realtime "
          f"({m['median_ms'] / v['median_ms']:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
