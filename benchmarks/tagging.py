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
  best with that CPU use: audio / max(main process CPU, all CPU / 2) (with workers, each
  decodes and scores; without, the main process does both). ``decode_only`` is decoding alone.
* ``long_file``: ``python -m genretag tag`` on one long MP3 in a fresh process; the peak memory
  of its process tree, sampled every 0.5 s: PSS summed over the main process and its workers
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
import statistics
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
from genretag.system import BF16_FLAGS, PRECISIONS, choose_precision, cpu_flags
from genretag.tagger import command, scan, stream
from genretag.task import TaggingTask

LABELS = [f"genre{i:02d}" for i in range(16)]
MODELS = {  # name: (TaggingTask arguments, window seconds)
    "demo": ({"channels": (16, 32, 32, 32), "gru_hidden": 32, "gru_layers": 1}, 4.0),
    "default": ({}, 10.0),
}
CLIP_S = 30.0
TARGET_X_REALTIME, TARGET_PEAK_MB = 300.0, 1536.0
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", *BF16_FLAGS, "amx_int8", "amx_tile")
SAMPLE_S = 0.5  # seconds between memory samples of a tag process tree (see peak_memory)
MUSICNN_VENV = Path(os.environ.get("MUSICNN_VENV", "/work/venv-musicnn-ref"))
# musicnn's own code, one process, the same files: tags of each (its published API).
MUSICNN_SCRIPT = """
import sys, time, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3"); os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
from musicnn.tagger import top_tags
for path in sys.argv[1:]:
    top_tags(path, model="MTT_musicnn", topN=3, print_tags=False)
"""


def cpu() -> dict:
    """This machine's CPU as the runtime choices see it."""
    import torch

    return {
        "model_name": _cpu_model(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": sorted(f for f in SHOWN_FLAGS if f in cpu_flags()),
        "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "auto_precision": choose_precision(torch.device("cpu")),
        "cores": len(os.sched_getaffinity(0)),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def musicnn(folder: Path, audio_s: float) -> dict | None:
    """musicnn's own figure on the same files (its venv, ``MUSICNN_VENV``), whole process."""
    python = MUSICNN_VENV / "bin" / "python"
    if not python.exists():
        return None
    files = [str(f) for f in scan.scan([str(folder)])]
    load, wall = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(
        [str(python), "-c", MUSICNN_SCRIPT, *files], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - wall
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return {"x_realtime_with_startup": round(audio_s / wall, 1), "wall_s": round(wall, 1),
            "load_avg_1min": round(load, 2)}  # fmt: skip


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
    path: Path, seconds: float, ckpt: Path, workers: int | None, tmp: Path, extra: tuple = ()
) -> dict:
    """``python -m genretag tag`` on a file or folder in a fresh process; its tree's peak memory.

    Memory is sampled every ``SAMPLE_S``: one PSS sweep of a ``tag`` tree reads the kernel's
    page tables and costs about 25 ms of CPU (AMD EPYC, 3 processes of 1 GB), which every
    50 ms took a third of a core from ``tag`` on 2 cores. ``monitor_cpu_s`` is what it took."""
    out = tmp / f"long-{ckpt.stem}.csv"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "genretag", "tag", str(path), "--ckpt", str(ckpt)]
    cmd += ["--out", str(out), "--quiet", *extra]
    cmd += [] if workers is None else ["--workers", str(workers)]  # None: tag's own default
    wall, children, mine = time.perf_counter(), _children_cpu(), time.process_time()
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
        time.sleep(SAMPLE_S)
    wall, mine = time.perf_counter() - wall, time.process_time() - mine
    cpu = _children_cpu() - children
    stderr = proc.stderr.read()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"genretag tag exited with {proc.returncode}: {stderr[-2000:]}")
    return {
        "model": ckpt.stem,
        "audio_s": seconds,
        "workers": system.default_workers(torch.device("cpu")) if workers is None else workers,
        "wall_s_with_startup": round(wall, 1),
        "x_realtime_with_startup": round(seconds / wall, 1),
        "x_realtime_per_cpu_s_with_startup": round(seconds / cpu, 1),
        "cpu_utilisation": round(cpu / wall / system.available_cores(), 3),  # of all cores
        "monitor_cpu_s": round(mine, 2),
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
    folder: Path, ckpt: Path, precisions: list[str], repeat: int, workers: int | None, tmp: Path
) -> dict:
    """Each precision on ``folder`` in fresh processes, interleaved (run r of every precision
    before run r + 1 of any), median of ``repeat`` runs with the load average of each; its
    speed over fp32's in the same rounds, and its agreement with fp32: top-1 equal, largest
    probability difference. ``auto`` is whatever this machine resolves it to."""
    files = scan.scan([str(folder)])
    audio_s = sum(sf.info(f).duration for f in files)
    runs: dict[str, list[dict]] = {p: [] for p in precisions}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for _ in range(repeat):
        for precision in precisions:
            load = os.getloadavg()[0]
            run = peak_memory(folder, audio_s, ckpt, workers, tmp, ("--precision", precision))
            run["load_avg_1min"] = round(load, 2)
            runs[precision].append(run)
            scores[precision] = _scores(tmp / f"long-{ckpt.stem}.csv")
    result = {}
    for precision, mine in runs.items():
        entry = {
            "files": len(files),
            "audio_s": round(audio_s, 1),
            "x_realtime_with_startup_median": round(
                statistics.median(r["x_realtime_with_startup"] for r in mine), 1
            ),
            "runs": [
                {
                    k: r[k]
                    for k in (
                        "x_realtime_with_startup",
                        "wall_s_with_startup",
                        "cpu_utilisation",
                        "monitor_cpu_s",
                        "load_avg_1min",
                    )  # fmt: skip
                }
                for r in mine
            ],
            "peak_pss_mb": max(r["peak_pss_mb"] for r in mine),
            "peak_rss_sum_mb": max(r["peak_rss_sum_mb"] for r in mine),
        }
        if "fp32" in runs and precision != "fp32":
            ratios = [
                r["x_realtime_with_startup"] / f["x_realtime_with_startup"]
                for r, f in zip(mine, runs["fp32"], strict=True)
            ]
            entry["speed_vs_fp32_median"] = round(statistics.median(ratios), 3)
            keys = sorted(scores["fp32"])
            ref = np.stack([scores["fp32"][k] for k in keys])
            got = np.stack([scores[precision][k] for k in keys])
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
        help="a trained checkpoint for model NAME (demo or default) instead of random weights; "
        "any other NAME (e.g. msd=musicnn-msd) is one more model for the precision runs",
    )  # fmt: skip
    parser.add_argument(
        "--precisions", nargs="+", choices=("auto", *PRECISIONS), help="(fp32 bf16 int8 auto)"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per precision (median)")
    parser.add_argument(
        "--precisions-only", action="store_true", help="with --real: only the precision runs"
    )
    parser.add_argument(
        "--whole-tracks",
        action="store_true",
        help="with --real: tag its files as they are (whole tracks), not 30 s clips cut from them",
    )
    parser.add_argument(
        "--tag-workers", type=int, help="--workers for the precision runs (default: tag's own)"
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
    trained = dict(spec.split("=", 1) for spec in args.ckpt)
    ckpts = {  # random weights for the synthetic runs, and for models no --ckpt names
        name: save_checkpoint(tmp / f"{name}.ckpt", name)
        for name in MODELS
        if synthetic or (name in args.models and name not in trained)
    }
    extra = {name: Path(ckpt) for name, ckpt in trained.items() if name not in MODELS}
    trained_models = {name: Path(ckpt) for name, ckpt in trained.items() if name in MODELS}
    audio_s = CLIP_S * clips
    chosen = args.precisions or ["fp32", "bf16", "int8", "auto"]
    corpora = {"synthetic_mp3": library}
    if args.real:
        corpora = {"whole": args.real} if args.whole_tracks else real_corpora(args.real, tmp)
    runs = 1 if args.quick else args.repeat
    precision_runs = {
        corpus: {
            name: precisions(folder, ckpt, chosen, runs, args.tag_workers, tmp)
            for name, ckpt in {**ckpts, **trained_models, **extra}.items()
            if name in [*args.models, *extra] and (name == "demo" or not args.quick)
        }
        for corpus, folder in corpora.items()
    }

    summary = {
        "cpu": cpu(),
        "load_avg_at_start": round(os.getloadavg()[0], 2),
        "precisions": {
            "workers": args.tag_workers or system.default_workers(torch.device("cpu")),
            "trained": trained,
            "real": str(args.real) if args.real else None,
        },
        "corpora": precision_runs,
        "musicnn": {
            corpus: musicnn(folder, sum(sf.info(f).duration for f in scan.scan([str(folder)])))
            for corpus, folder in corpora.items()
        },
    }
    for corpus, models in precision_runs.items():  # each run over musicnn's, same files
        theirs = (summary["musicnn"][corpus] or {}).get("x_realtime_with_startup")
        if not theirs:  # no musicnn venv here, or its run failed
            continue
        for entry in (e for by_precision in models.values() for e in by_precision.values()):
            entry["vs_musicnn"] = round(entry["x_realtime_with_startup_median"] / theirs, 2)
    summary["load_avg_at_end"] = round(os.getloadavg()[0], 2)
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
