"""Time genretag.metrics.bootstrap_intervals: 1000 draws over 800 tracks x 16 labels.

python benchmarks/bootstrap.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from genretag.metrics import bootstrap_intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=800)
    parser.add_argument("--labels", type=int, default=16)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(args.tracks, args.labels, generator=g) < 0.2).float()
    for name, probs in [
        ("distinct scores", torch.rand(args.tracks, args.labels, generator=g) + 0.5 * targets),
        (
            "tied scores",
            (torch.rand(args.tracks, args.labels, generator=g) + 0.5 * targets).round(decimals=2),
        ),
    ]:
        times = []
        for _ in range(3):
            start, cpu = time.perf_counter(), time.process_time()
            bootstrap_intervals(probs, targets, draws=args.draws)
            times.append((time.perf_counter() - start, time.process_time() - cpu))
        wall, cpu = min(times)
        print(
            f"{name}: {args.draws} draws, {args.tracks} x {args.labels}: {wall:.3f} s wall, {cpu:.3f} s CPU ({args.threads} threads)"
        )


if __name__ == "__main__":
    main()
