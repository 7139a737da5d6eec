"""Throughput and peak memory of ``genretag tag`` on this machine's CPU.

    python benchmarks/tagging.py           # 20 min of FMA-like MP3s, a 1-hour MP3 (~5 min)
    python benchmarks/tagging.py --quick   # 4 min of MP3s, a 10-minute MP3 (CI, ~1-2 min)
    python benchmarks/tagging.py --keep /tmp/bench   # keep the generated audio for next time

Two models with random weights and 16 labels: ``demo`` (the slim CRNN of configs/demo.yaml, 4 s
windows) and ``default`` (TaggingTask's defaults, Choi et al.'s CRNN, 10 s windows).

* ``throughput``: the command run in-process (torch and Lightning already imported) on a library
  of 30 s, 44.1 kHz stereo, 320 kbit/s MP3s with cover art (FMA's format), with 0, 1 and 2
  decoding workers. ``x_realtime`` is audio seconds per wall second on this machine as it is;
  ``x_realtime_per_cpu_s`` is audio seconds per CPU second of the main process and its workers,
  which holds on a busy machine; ``x_realtime_idle_2_cores`` is what two idle cores allow at
  best with that CPU use: audio / max(main process CPU, all CPU / 2) (the main process runs
  inference on one thread while the workers decode). ``decode_only`` is the workers alone.
* ``long_file``: ``python -m genretag tag`` on one long MP3 in a fresh process; the peak memory
  of its process tree, sampled every 50 ms: PSS summed over the main process and its workers
  (shared pages counted once) and RSS summed (shared pages counted in each: an upper bound).

Prints one JSON object, then a one-line summary starting with ``#``. Targets: >= 300x realtime
on 2 CPU cores, peak memory < 1.5 GB whatever the file length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytorch_lightning as pl
import soundfile as sf
import torch
from _corpus import music, write_fma_mp3  # benchmarks/ is on the path when run as a script
from _realmusic import real_corpora
from torch.utils.data import DataLoader

from genretag import system
from genretag.inference import PRECISIONS
from genretag.tagger import command, scan, stream
from genretag.task import TaggingTask

LABELS = [f"genre{i:02d}" for i in range(16)]
MODELS = {  # name: (TaggingTask arguments, window seconds)
    "demo": ({"channels": (16, 32, 32, 32), "gru_hidden": 32, "gru_layers": 1}, 4.0),
    "default": ({}, 10.0),
}
CLIP_S = 30.0
TARGET_X_REALTIME, TARGET_PEAK_MB = 300.0, 1536.0


def write_long_mp3(path: Path, seconds: float, sr: int = 44_100) -> Path:
    """A 320 kbit/s stereo MP3 of ``seconds``, written 30 s at a time (bounded memory)."""
    if not path.exists():
        temp = path.with_name(f".{path.name}")
        with sf.SoundFile(
            temp, "w", sr, 2, format="MP3", bitrate_mode="CONSTANT", compression_level=0.0
        ) as handle:
            for i, start in enumerate(np.arange(0.0, seconds, CLIP_S)):
                handle.write(music(min(CLIP_S, seconds - start), sr, 2, seed=i))
        temp.rename(path)
    return path


def save_checkpoint(path: Path, name: str) -> Path:
    if not path.exists():
        kwargs, window = MODELS[name]
        torch.manual_seed(0)
        model = TaggingTask(labels=LABELS, window_seconds=window, **kwargs)
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
        trainer.strategy.connect(model)
        trainer.save_checkpoint(path)
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def decode_only(folder: Path, workers: int, audio_s: float) -> dict:
    """The decoding workers alone: 16 kHz, 4 s windows, batches of 8, no model."""
    files = scan.scan([str(folder)])
    dataset = stream.WindowStream(files, 16_000, 64_000, 64_000, 8, "zero")
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, in_order=False)
    wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    for _ in loader:
        pass
    del loader
    cpu = time.process_time() - cpu + _children_cpu() - children
    return {
        "x_realtime": round(audio_s / (time.perf_counter() - wall), 1),
        "x_realtime_per_cpu_s": round(audio_s / cpu, 1),
    }


def throughput(library: Path, ckpt: Path, workers: int, audio_s: float, tmp: Path) -> dict:
    out = tmp / f"out-{ckpt.stem}-{workers}.csv"
    out.unlink(missing_ok=True)
    args = [str(library), "--ckpt", str(ckpt), "--out", str(out), "--workers", str(workers)]
    wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    if command.main([*args, "--quiet"]) != 0:
        raise RuntimeError(f"genretag tag {' '.join(args)} failed")
    wall = time.perf_counter() - wall
    main_cpu = time.process_time() - cpu
    workers_cpu = _children_cpu() - children  # the DataLoader workers, joined at the end
    cpu = main_cpu + workers_cpu
    return {
        "model": ckpt.stem,
        "workers": workers,
        "torch_threads": system.cpu_threads(workers),
        "wall_s": round(wall, 2),
        "x_realtime": round(audio_s / wall, 1),
        "main_cpu_s": round(main_cpu, 2),
        "workers_cpu_s": round(workers_cpu, 2),
        "x_realtime_per_cpu_s": round(audio_s / cpu, 1),
        "x_realtime_idle_2_cores": round(audio_s / max(main_cpu, cpu / 2), 1) if workers else None,
    }


def peak_memory(
    path: Path, seconds: float, ckpt: Path, workers: int, tmp: Path, extra: tuple = ()
) -> dict:
    """``python -m genretag tag`` on a file or folder in a fresh process; its tree's peak memory."""
    out = tmp / f"long-{ckpt.stem}.csv"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "genretag", "tag", str(path), "--ckpt", str(ckpt)]
    cmd += ["--out", str(out), "--workers", str(workers), "--quiet", *extra]
    wall, children = time.perf_counter(), _children_cpu()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    main = psutil.Process(proc.pid)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss = pss = 0
        try:
            for process in [main, *main.children(recursive=True)]:
                info = process.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
        except psutil.Error:  # a process ended while it was sampled
            pass
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.05)
    wall = time.perf_counter() - wall
    stderr = proc.stderr.read()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"genretag tag exited with {proc.returncode}: {stderr[-2000:]}")
    return {
        "model": ckpt.stem,
        "audio_s": seconds,
        "workers": workers,
        "wall_s_with_startup": round(wall, 1),
        "x_realtime_with_startup": round(seconds / wall, 1),
        "x_realtime_per_cpu_s_with_startup": round(seconds / (_children_cpu() - children), 1),
        "peak_pss_mb": round(peak_pss / 2**20),
        "peak_rss_sum_mb": round(peak_rss / 2**20),
    }


def _scores(out: Path) -> dict[str, np.ndarray]:
    """{path: scores (C,)} of a --out table (csv)."""
    header, *lines = out.read_text().splitlines()
    first = header.split(",").index("top3_score") + 1  # the label columns follow the top-k
    rows = [line.split(",") for line in lines if line]
    return {row[0]: np.array(row[first:], np.float64) for row in rows}


def precisions(
    folder: Path, ckpt: Path, precisions: list[str], repeat: int, workers: int, tmp: Path
) -> dict:
    """Each precision on ``folder`` in fresh processes (median of ``repeat`` runs, with the load
    average of each) and its agreement with fp32: top-1 equal, largest probability difference."""
    files = scan.scan([str(folder)])
    audio_s = sum(sf.info(f).duration for f in files)
    result, reference = {}, None
    for precision in precisions:
        runs = []
        for _ in range(repeat):
            load = os.getloadavg()[0]
            run = peak_memory(folder, audio_s, ckpt, workers, tmp, ("--precision", precision))
            run["load_avg_1min"] = round(load, 2)
            runs.append(run)
        scores = _scores(tmp / f"long-{ckpt.stem}.csv")
        speeds = sorted(r["x_realtime_with_startup"] for r in runs)
        entry = {
            "files": len(files),
            "audio_s": round(audio_s, 1),
            "x_realtime_with_startup_median": speeds[len(speeds) // 2],
            "runs": [
                {
                    k: r[k]
                    for k in ("x_realtime_with_startup", "wall_s_with_startup", "load_avg_1min")
                }
                for r in runs
            ],
            "peak_pss_mb": max(r["peak_pss_mb"] for r in runs),
            "peak_rss_sum_mb": max(r["peak_rss_sum_mb"] for r in runs),
        }
        if precision == "fp32":
            reference = scores
        elif reference is not None:
            keys = sorted(reference)
            ref = np.stack([reference[k] for k in keys])
            got = np.stack([scores[k] for k in keys])
            entry["top1_agreement"] = round(float((ref.argmax(1) == got.argmax(1)).mean()), 4)
            entry["max_abs_prob_diff"] = round(float(np.abs(ref - got).max()), 5)
        result[precision] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 min of clips, a 10-minute file")
    parser.add_argument("--keep", type=Path, help="folder for the generated audio, reused later")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--real", type=Path, help="a folder of real music: MP3/Opus corpora")
    parser.add_argument(
        "--ckpt", action="append", default=[], metavar="NAME=FILE",
        help="a trained checkpoint for model NAME (demo or default) instead of random weights",
    )  # fmt: skip
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, help="(fp32 int8)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per precision (median)")
    parser.add_argument(
        "--precisions-only", action="store_true", help="with --real: only the precision runs"
    )
    args = parser.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="genretag-bench-"))
    clips, long_s = (8, 600.0) if args.quick else (40, 3600.0)
    library = tmp / f"library-{clips}"
    synthetic = not (args.real and args.precisions_only)
    for i in range(clips if synthetic else 0):
        if not (library / f"{i:03d}.mp3").exists():
            write_fma_mp3(library / f"{i:03d}.mp3", CLIP_S, seed=i)
    long_file = tmp / f"long-{long_s:.0f}s.mp3"
    if synthetic:
        write_long_mp3(long_file, long_s)
    ckpts = {name: save_checkpoint(tmp / f"{name}.ckpt", name) for name in MODELS}
    trained = dict(spec.split("=", 1) for spec in args.ckpt)
    audio_s = CLIP_S * clips
    chosen = args.precisions or ["fp32", "int8"]
    corpora = real_corpora(args.real, tmp) if args.real else {"synthetic_mp3": library}
    runs = 1 if args.quick else args.repeat
    precision_runs = {
        corpus: {
            name: precisions(folder, Path(trained.get(name, ckpt)), chosen, runs, 1, tmp)
            for name, ckpt in ckpts.items()
            if name in args.models and (name == "demo" or not args.quick)
        }
        for corpus, folder in corpora.items()
    }

    summary = {
        "precisions": {
            "workers": 1,
            "trained": trained,
            "real": str(args.real) if args.real else None,
        },
        "corpora": precision_runs,
    }
    if not synthetic:
        print(json.dumps({"benchmark": "tagging", "quick": args.quick, **summary}))
        print("# tagging: precision runs only (--precisions-only)", flush=True)
        return
    load = os.getloadavg()[0]
    result = {
        "benchmark": "tagging",
        "quick": args.quick,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__,
        },
        "library": {"files": clips, "audio_s": audio_s, "format": "MP3 44.1 kHz stereo 320k"},
        "decode_only": {w: decode_only(library, w, audio_s) for w in args.workers},
        "throughput": [
            throughput(library, ckpt, w, audio_s, tmp)
            for ckpt in ckpts.values()
            for w in args.workers
        ],
        "long_file": [
            peak_memory(long_file, long_s, ckpt, 1, tmp)
            for name, ckpt in ckpts.items()
            if name == "demo" or not args.quick
        ],
    }
    result.update(summary)
    result["machine"]["load_avg_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    best = {}
    for name in MODELS:
        runs = [r for r in result["throughput"] if r["model"] == name]
        best[name] = max(runs, key=lambda r: r["x_realtime"])
    idle = {
        n: max(r["x_realtime_idle_2_cores"] or 0 for r in result["throughput"] if r["model"] == n)
        for n in MODELS
    }
    peak = max(r["peak_pss_mb"] for r in result["long_file"])
    result["targets"] = {
        "x_realtime_2_cores": {
            "target": TARGET_X_REALTIME,
            "measured": {n: r["x_realtime"] for n, r in best.items()},
            "idle_2_cores": idle,
        },
        "peak_mb": {"target": TARGET_PEAK_MB, "measured": peak},
    }
    print(json.dumps(result))
    speeds = ", ".join(
        f"{n} model {r['x_realtime']:.0f}x (workers {r['workers']}; {idle[n]:.0f}x on 2 idle cores)"
        for n, r in best.items()
    )
    print(
        f"# tagging on {result['machine']['cores']} CPU cores (load {load:.1f}): {speeds}; "
        f"{long_s / 60:g} min file: peak {peak} MB PSS; targets >= {TARGET_X_REALTIME:.0f}x, "
        f"< {TARGET_PEAK_MB:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
