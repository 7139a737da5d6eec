"""Start-up of the commands a library owner runs: whole process, one short file, warm page cache.

    python benchmarks/startup.py [--before DIR] [--repeat 5]

Times ``genretag tag FILE --ckpt X --out T`` and ``beet genretag -p`` on one item (a beets
folder made here, the file imported without copying), each as a fresh process, and, with
``--before DIR`` (a checkout of an earlier genretag, e.g. ``git worktree add --detach DIR REV``),
the same commands with that checkout first on PYTHONPATH, interleaved run by run. It also lists
which heavy modules a ``tag`` process imports. Prints one JSON object: the CPU (flags, torch's
capability), the load average, and the median and min seconds of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from genretag.task import TaggingTask

HEAVY = ("pytorch_lightning", "lightning_fabric", "torchmetrics", "pandas", "scipy.signal")


def cpu() -> dict:
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = line
            break
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    return {
        "model": platform.processor() or platform.machine(),
        "flags": [f for f in wanted if f" {f}" in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
    }


def setup(root: Path) -> tuple[Path, Path, Path]:
    """A 20 s WAV, a demo-size checkpoint and a beets folder that has imported the file."""
    music = root / "music"
    music.mkdir()
    t = np.arange(20 * 16_000) / 16_000
    sf.write(music / "song.flac", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000)
    task = TaggingTask(["Rock", "Electronic", "Hip-Hop"], channels=(16, 32, 32, 32),
                       gru_hidden=32, gru_layers=1, window_seconds=4.0)  # fmt: skip
    ckpt = root / "demo.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    beets = root / "beets"
    beets.mkdir()
    config = {
        "directory": str(root / "lib"),
        "library": str(beets / "library.db"),
        "plugins": "genretag",
        "import": {"copy": False, "write": False, "log": None},
        "genretag": {"ckpt": str(ckpt), "force": True},
    }
    (beets / "config.yaml").write_text(yaml.safe_dump(config))
    return music / "song.flac", ckpt, beets


def timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of ``cmd``, run in the checkout on PYTHONPATH (``python -m`` puts its
    working folder before PYTHONPATH)."""
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=env["PYTHONPATH"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an earlier genretag checkout to compare")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    beet = str(Path(sys.executable).with_name("beet"))
    with tempfile.TemporaryDirectory() as tmp:
        song, ckpt, beets = setup(Path(tmp))
        versions = {"now": here, **({"before": args.before.resolve()} if args.before else {})}
        envs = {
            name: {**os.environ, "PYTHONPATH": str(tree), "BEETSDIR": str(beets)}
            for name, tree in versions.items()
        }
        out = Path(tmp) / "tags.csv"
        tag = [sys.executable, "-m", "genretag", "tag", str(song), "--ckpt", str(ckpt),
               "--out", str(out), "--quiet"]  # fmt: skip
        subprocess.run([beet, "import", "-A", "-q", str(song.parent)], env=envs["now"], check=True,
                       capture_output=True)  # fmt: skip
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for name, env in envs.items():
                out.unlink(missing_ok=True)
                runs.setdefault(f"tag/{name}", []).append(timed(tag, env))
                runs.setdefault(f"beet/{name}", []).append(timed([beet, "genretag", "-p"], env))
        probe = "import sys, genretag.tagger.command; print(sorted(set(sys.modules) & set({})))"
        imported = subprocess.run([sys.executable, "-c", probe.format(HEAVY)], env=envs["now"],
                                  capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    report = {
        "benchmark": "startup",
        "cpu": cpu(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "repeat": args.repeat,
        "seconds": {
            k: {"median": round(statistics.median(v), 2), "min": round(min(v), 2)}
            for k, v in runs.items()
        },
        "tag_imports_of_the_heavy_modules": imported,
    }
    if args.before:
        for what in ("tag", "beet"):
            now, before = report["seconds"][f"{what}/now"], report["seconds"][f"{what}/before"]
            report[f"{what}_speedup"] = round(before["median"] / now["median"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
