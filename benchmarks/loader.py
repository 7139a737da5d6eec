"""Clips per second out of the training DataLoader at 0, 1, 2, ... workers, streamed and cached.

    python benchmarks/loader.py [--quick] [--workers 0 1 2 4 8] [--batch-size 32]

The loader is the real one (ClipDataModule.train_dataloader: TrainClips, collate, pinned memory
where a GPU is present, persistent workers, prefetch) over FMA-format MP3s (30 s, 44.1 kHz
stereo, 320 kbit/s, ID3 + cover art; every 10th 48 kHz, every 7th mono), random 10 s crops at
16 kHz. Two sources: streaming (each crop decoded from the MP3, the default) and the decoded
cache (filled first, then read). Scaling efficiency at w workers = rate(w) / (w x rate(0)), where
rate(0) is the single-core rate of the main process decoding alone. ``cpu_busy`` is the share
of w cores the workers actually got: on a shared machine, efficiency follows it (contention, not
the loader). ``cpu_efficiency`` = clips per CPU-second (workers + main) at w workers / at 0: the
efficiency the cores would deliver if they were free (what multiprocessing itself costs). Prints one JSON object, then a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from _corpus import write_fma_mp3  # benchmarks/ is on the path when run as a script

from genretag.data.cache import DecodedCache, fill
from genretag.data.datamodules import ClipDataModule, default_workers
from genretag.data.datasets import ClipList


class ListedClips(ClipDataModule):
    """The shared base over a fixed list of files (one genre each), for the benchmark."""

    def __init__(self, paths: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.paths = paths
        self.label_names = ["a", "b", "c", "d"]

    def clip_list(self, stage: str) -> ClipList:
        targets = np.eye(4, dtype=np.float32)[np.arange(len(self.paths)) % 4]
        return ClipList(self.paths, [str(i) for i in range(len(self.paths))], targets)


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def clips_per_second(
    paths: list[str], workers: int, batch_size: int, seconds: float, cache_dir: str | None,
    min_time: float, min_batches: int,
) -> dict[str, float]:  # fmt: skip
    """Steady-state clips/s: timed from the first batch (workers started) to the last."""
    data = ListedClips(
        paths, batch_size=batch_size, num_workers=workers, window_seconds=seconds,
        cache_dir=cache_dir,
    )  # fmt: skip
    return time_train_loader(data, min_time, min_batches)


def time_train_loader(
    data: ClipDataModule, min_time: float, min_batches: int
) -> dict[str, float | int | None]:
    """Steady-state clips/s of ``data.train_dataloader()`` (any ClipDataModule, set up here).

    Timed from the first batch (workers started, excluded) for at least ``min_batches`` and
    ``min_time`` seconds, starting new epochs as needed. Also the CPU the workers and the main
    process used (``cpu_busy``: share of the workers' cores they got).
    """
    workers = data.num_workers
    data.setup("fit")
    loader = data.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # starts the workers; excluded
    me = psutil.Process()
    children = me.children(recursive=True)
    cpu0, main0, start = _cpu_seconds(children), time.process_time(), time.perf_counter()
    clips = batches = 0
    while batches < min_batches or time.perf_counter() - start < min_time:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)  # persistent workers: a new epoch, same processes
            continue
        clips += len(batch["audio"])
        batches += 1
    wall = time.perf_counter() - start
    worker_cpu = _cpu_seconds(children) - cpu0
    main_cpu = time.process_time() - main0
    del iterator, loader
    return {
        "clips_per_s": round(clips / wall, 1),
        "clips_per_cpu_s": round(clips / (worker_cpu + main_cpu), 1),
        "cpu_busy": round(worker_cpu / (wall * workers), 2) if workers else None,
        "main_cpu_share": round(main_cpu / wall, 2),
        "batches": batches,
    }


def make_files(folder: Path, count: int, seconds: float) -> list[str]:
    """``count`` FMA-format MP3s: mostly 44.1 kHz stereo, one in 10 at 48 kHz, one in 7 mono."""
    paths = []
    for i in range(count):
        rate = 48_000 if i % 10 == 9 else 44_100
        channels = 1 if i % 7 == 6 else 2
        paths.append(str(write_fma_mp3(folder / f"{i}.mp3", seconds, rate, channels, seed=i)))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--workers", type=int, nargs="*", help="worker counts (default 0..cores)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (quick: 8)")
    parser.add_argument("--files", type=int, default=None, help="distinct MP3s (default 16)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cores = default_workers()
    every = [0, 1, 2] if args.quick else sorted({0, 1, 2, *range(4, cores + 1, 4), cores})
    worker_counts = args.workers or every
    batch_size = args.batch_size or (8 if args.quick else 32)
    file_seconds, crop = (12.0, 3.0) if args.quick else (30.0, 10.0)
    min_time = args.min_time or (0.5 if args.quick else 6.0)
    min_batches = 3 if args.quick else 8
    result: dict = {
        "benchmark": "loader",
        "quick": args.quick,
        "cores": cores,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cuda": torch.cuda.is_available(),
        "batch_size": batch_size,
        "crop_seconds": crop,
        "file_seconds": file_seconds,
        "sources": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(
            Path(tmp) / "audio", args.files or (4 if args.quick else 16), file_seconds
        )
        paths = files * max(1, (batch_size * 64) // len(files))  # more items than one run takes
        cache_dir = str(Path(tmp) / "cache")
        fill(DecodedCache(cache_dir, 16_000), files, workers=min(cores, len(files)))
        for source, directory in (("stream", None), ("cache", cache_dir)):
            figures = {}
            for workers in worker_counts:
                figures[str(workers)] = clips_per_second(
                    paths, workers, batch_size, crop, directory, min_time, min_batches
                )
            if 0 in worker_counts:
                single, per_cpu = figures["0"]["clips_per_s"], figures["0"]["clips_per_cpu_s"]
                for workers in (w for w in worker_counts if w > 0):
                    f = figures[str(workers)]
                    f["efficiency"] = round(f["clips_per_s"] / (workers * single), 2)
                    # what the cores would give if they were free: CPU cost per clip vs 0 workers
                    f["cpu_efficiency"] = round(f["clips_per_cpu_s"] / per_cpu, 2)
            result["sources"][source] = figures
    stream = result["sources"]["stream"]
    two = stream.get("2", {})
    result["targets"] = {
        "efficiency_at_2_workers": {
            "target": 0.8,
            "measured": two.get("efficiency"),
            "cpu_efficiency": two.get("cpu_efficiency"),
            "cpu_busy": two.get("cpu_busy"),
        }
    }
    print(json.dumps(result))
    summary = ", ".join(f"{w} workers {f['clips_per_s']}/s" for w, f in stream.items())
    cached = ", ".join(f"{w}: {f['clips_per_s']}/s" for w, f in result["sources"]["cache"].items())
    print(
        f"# loader, {crop:g} s crops, batch {batch_size}: streamed {summary}; "
        f"efficiency at 2 workers {two.get('efficiency')}; cached {cached}",
        flush=True,
    )


if __name__ == "__main__":
    main()
