"""What Ray costs: plain ``genretag tag`` against ``tag --engine ray`` on the same real files.

    python benchmarks/cluster.py --keep /tmp/bench-cluster       # 40 real 30 s MP3s, default CRNN
    python benchmarks/cluster.py --quick                          # 6 clips, demo model (CI smoke)

The clips are cut from a folder of real music (``--real``, default: Debian's
wesnoth-1.16-music unpacked under /work/audio) by benchmarks/_realmusic.py: 30 s, 44.1 kHz
stereo 320 kbit/s MP3 (FMA's format). The model has random weights (16 labels).

For each CPU count (``--cpus 2,1``; this process and everything it starts pinned to that many
cores), interleaved: plain ``tag`` (in this process, its default workers and threads), then
``tag --engine ray`` on a local Ray started with that many CPUs; each on the first half of the
files, then on all of them. ``x_realtime`` = audio seconds / wall seconds of the whole command
(start-up included: a Ray run starts its actors and loads the model each time);
``x_realtime_steady`` = (audio of all - audio of the half) / (wall of all - wall of the half):
the rate once a run is going, what a long catalogue sees (the start-ups cancel out).
The Parquet output's bytes per row are measured for the sizing in the README.

Prints one JSON object, then a one-line summary starting with ``#``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import ray
import soundfile as sf
import torch
from _realmusic import real_corpora  # benchmarks/ is on the path when run as a script
from tagging import save_checkpoint

from genretag.tagger import command

DEFAULT_REAL = Path("/work/audio/wesnoth-1.16-music")


def _load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _tag(files: list[Path], ckpt: Path, out: Path, *extra: str) -> float:
    """Wall seconds of one ``genretag tag`` in this process."""
    args = [*map(str, files), "--ckpt", str(ckpt), "--out", str(out), "--quiet", *extra]
    start = time.perf_counter()
    code = command.main(args)
    if code != 0:
        raise RuntimeError(f"genretag tag {' '.join(args)} exited with {code}")
    return time.perf_counter() - start


def _rates(wall_half: float, wall: float, half_s: float, audio_s: float, load: list) -> dict:
    return {
        "wall_s": round(wall, 2),
        "half_wall_s": round(wall_half, 2),
        "x_realtime": round(audio_s / wall, 1),
        "x_realtime_steady": round((audio_s - half_s) / max(wall - wall_half, 1e-9), 1),
        "loadavg": load,
    }


def one_cpu_count(cpus: int, files: list[Path], ckpt: Path, tmp: Path) -> dict:
    """Plain tag, then Ray, each on the first half of ``files`` and then on all of them."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cpus]))
    half = files[: len(files) // 2]
    half_s, audio_s = (sum(sf.info(f).duration for f in fs) for fs in (half, files))
    load = _load()
    plain_half = _tag(half, ckpt, tmp / f"plain-half-{cpus}.csv")
    plain = _tag(files, ckpt, tmp / f"plain-{cpus}.csv")
    plain_rates = _rates(plain_half, plain, half_s, audio_s, load)
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    init_s = time.perf_counter() - start
    try:
        load = _load()
        ray_half = _tag(half, ckpt, tmp / f"ray-half-{cpus}.parquet", "--engine", "ray")
        wall = _tag(files, ckpt, tmp / f"ray-{cpus}.parquet", "--engine", "ray")
    finally:
        ray.shutdown()
    ray_rates = _rates(ray_half, wall, half_s, audio_s, load)
    parts = list((tmp / f"ray-{cpus}.parquet").glob("part-*.parquet"))
    return {
        "cpus": cpus,
        "plain": plain_rates,
        "ray": {
            "init_s": round(init_s, 2),
            **ray_rates,
            "parquet_bytes_per_row": round(sum(p.stat().st_size for p in parts) / len(files)),
        },
        "ray_over_plain": round(plain / wall, 3),
        "ray_steady_over_plain_steady": round(
            ray_rates["x_realtime_steady"] / plain_rates["x_realtime_steady"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="a folder of music")
    parser.add_argument("--clips", type=int, default=40, help="30 s clips to tag")
    parser.add_argument("--model", choices=("default", "demo"), default="default")
    parser.add_argument("--cpus", default="2,1", help="CPU counts to compare, e.g. 2,1")
    parser.add_argument("--keep", type=Path, help="keep clips and checkpoints here")
    parser.add_argument("--quick", action="store_true", help="6 clips, the demo model")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.model = 6, "demo"
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    folders = real_corpora(args.real, work / "clips", per_track=2)
    files = sorted(folders["mp3"].glob("*.mp3"))[: args.clips]
    audio_s = sum(sf.info(f).duration for f in files)
    ckpt = save_checkpoint(work / f"{args.model}.ckpt", args.model)
    everything = os.sched_getaffinity(0)
    runs = []
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        try:
            for cpus in map(int, args.cpus.split(",")):
                runs.append(one_cpu_count(cpus, files, ckpt, Path(tmp)))
        finally:
            os.sched_setaffinity(0, everything)
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "cores": len(everything),
            "loadavg_end": _load(),
        },
        "ray": ray.__version__,
        "torch": torch.__version__,
        "model": args.model,
        "files": len(files),
        "audio_s": round(audio_s, 1),
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    line = "; ".join(
        f"{r['cpus']} CPU: tag {r['plain']['x_realtime']}x (steady "
        f"{r['plain']['x_realtime_steady']}x), ray {r['ray']['x_realtime']}x (steady "
        f"{r['ray']['x_realtime_steady']}x, Ray start {r['ray']['init_s']} s)"
        for r in runs
    )
    print(f"# {len(files)} real 30 s MP3s, {args.model} CRNN: {line}")


if __name__ == "__main__":
    main()
