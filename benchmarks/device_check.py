"""The GPU check in one run: environment, CUDA tests, demo fit, step, loader, cache, tagging.

On the GPU machine (device tool), after ``bash benchmarks/device_wheels.sh`` here, one call with
``carry=[".whl"]`` and ``timeout_s=540`` (the script itself ends in under 8 minutes)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; set -o pipefail; python3 benchmarks/device_check.py 2>&1 | tee $OUT/device_check.log

Here (CI's dry run, ~1 minute on 2 cores): ``python benchmarks/device_check.py --cpu --quick``.

Parts, each timed and in its own try/except (a failure is written as that part's ``error``;
the JSON is rewritten after every part, so a kill leaves what was done):

* ``env``: Python, torch, CUDA, the GPU and its memory, CPU cores, the packages genretag needs
  (``missing`` lists those not installed: carry them as wheels, benchmarks/device_wheels.sh);
* ``gpu_tests``: ``python -m pytest -m gpu tests/test_gpu.py`` (skipped without CUDA);
* ``demo_fit``: ``python -m genretag fit --config configs/demo.yaml --trainer.precision
  bf16-mixed`` (quick: one epoch of 2 batches on the generated corpus): wall time, best
  val/roc_auc from the ModelCheckpoint state in the checkpoints;
* ``train_step``: the fma_small model (configs/fma_small.yaml), its real ``training_step`` and
  an AdamW step under bf16 autocast, batch 64 and 128 of 10 s, eager and ``torch.compile``-d
  trunk and head: clips/s and the front-end's share (front-end alone, same batch, same autocast);
* ``loader``: FMADataModule's training loader (streamed 10 s crops of 30 s MP3s) at 1, 4, 8, 16
  workers: clips/s, efficiency = rate(w) / (w x rate(1));
* ``cache_epoch``: ``genretag prepare`` into a cache_dir, then a training epoch streamed and
  the same epoch from the cache (benchmarks/fit.py's run, default model);
* ``tagging``: ``python -m genretag tag`` of the corpus with the demo checkpoint, 16 workers:
  its summary's x realtime.

The corpus (FMA layout, 30 s 320 kbit/s MP3s, benchmarks/_corpus.py) is written in parallel
first. Prints progress with timestamps; writes ``$OUT/device_check.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, of what genretag, the tests and these benchmarks import
NEEDED = {
    "torch": "torch", "pytorch_lightning": "pytorch-lightning", "torchmetrics": "torchmetrics",
    "nnAudio": "nnAudio", "jsonargparse": "jsonargparse", "docstring_parser": "docstring-parser",
    "typeshed_client": "typeshed-client", "omegaconf": "omegaconf", "av": "av",
    "soundfile": "soundfile", "soxr": "soxr", "mutagen": "mutagen", "numpy": "numpy",
    "pandas": "pandas", "yaml": "PyYAML", "tqdm": "tqdm", "tensorboard": "tensorboard",
    "psutil": "psutil", "pytest": "pytest",
}  # fmt: skip
REALTIME = re.compile(r"tagged (\d+) files .* in ([\d.]+) s \((\d+)x realtime\)")


@dataclass(frozen=True)
class Sizes:
    """What each part does: the full run for a GPU, or ``--quick`` (CI's dry run on a CPU)."""

    per_genre: dict[str, int]  # tracks per split for each of the 4 genre sets (tagging, fit)
    track_s: float
    epoch_per_genre: dict[str, int]  # the loader's and cache epoch's corpus: many tracks...
    epoch_unique: int  # ...links to this many MP3s (an epoch of many batches, little encoding)
    test_timeout: int
    fit_args: tuple[str, ...]  # extra `genretag fit` options
    fit_timeout: int
    batches: tuple[int, ...]
    step_s: float
    steps: int
    warmup: int
    compile: bool
    workers: tuple[int, ...]
    loader_batch: int
    crop_s: float
    min_time: float
    epochs: int
    tag_workers: int


FULL = Sizes(
    per_genre={"training": 96, "validation": 4, "test": 1}, track_s=30.0,
    epoch_per_genre={"training": 512, "validation": 4}, epoch_unique=32, test_timeout=240,
    fit_args=("--trainer.max_time", "00:00:02:00"), fit_timeout=210, batches=(64, 128),
    step_s=10.0, steps=10, warmup=3, compile=True, workers=(1, 4, 8, 16), loader_batch=64,
    crop_s=10.0, min_time=4.0, epochs=2, tag_workers=16,
)  # fmt: skip
QUICK = Sizes(
    per_genre={"training": 1, "validation": 1}, track_s=4.0,
    epoch_per_genre={"training": 2, "validation": 1}, epoch_unique=4, test_timeout=120,
    fit_args=("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
              "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "4",
              "--data.init_args.num_workers", "1"),
    fit_timeout=120, batches=(4,), step_s=1.0, steps=2, warmup=1, compile=False,
    workers=(1, 2), loader_batch=4, crop_s=2.0, min_time=0.3, epochs=1, tag_workers=1,
)  # fmt: skip


class Check:
    """The JSON being filled in, the clock, and the subprocess environment."""

    def __init__(self, out: Path, sizes: Sizes, quick: bool, cpu: bool) -> None:
        self.out, self.sizes, self.start = out, sizes, time.perf_counter()
        self.result: dict[str, Any] = {"benchmark": "device_check", "quick": quick, "cpu": cpu}
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{self.elapsed():6.1f} s] {text}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def part(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one part; its figures (or its error) go into the JSON, written at once."""
        self.say(f"{name} ...")
        start = time.perf_counter()
        try:
            section = fn()
        except Exception as error:  # one part's failure must not lose the others
            message = f"{type(error).__name__}: {str(error).strip()[-1500:]}"
            section = {"error": message, "traceback": traceback.format_exc()[-3000:]}
            self.say(f"{name} FAILED: {message.splitlines()[0] if message else ''}")
        section["seconds"] = round(time.perf_counter() - start, 1)
        self.result[name] = section
        self.write()
        self.say(f"{name} done in {section['seconds']} s")
        return section

    def write(self) -> None:
        self.result["total_s"] = round(self.elapsed(), 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.result, indent=1, default=str) + "\n")

    def run(self, cmd: list[str], timeout: int, log: Path) -> tuple[int, str, float]:
        """A command in the repository root: (exit code, its output, seconds); output in ``log``."""
        start = time.perf_counter()
        with open(log, "w") as handle:
            try:
                code = subprocess.run(
                    cmd, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                    timeout=timeout,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                code = 124
        return code, log.read_text(errors="replace"), time.perf_counter() - start


def _tail(text: str, chars: int = 2000) -> str:
    return text[-chars:]


# -- parts ----------------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Python, torch, CUDA, the GPU, CPU cores and the versions of the packages genretag needs."""
    packages, missing = {}, []
    for module, dist in NEEDED.items():
        if importlib.util.find_spec(module) is None:
            missing.append(dist)
            continue
        try:
            packages[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            packages[dist] = "installed (no metadata)"
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "packages": packages,
        "missing": missing,
    }
    import torch

    env.update(
        torch=torch.__version__, cuda=torch.version.cuda, torch_threads=torch.get_num_threads()
    )
    env["cuda_available"] = torch.cuda.is_available()
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(), multiprocessors=props.multi_processor_count,
            compute_capability=f"{props.major}.{props.minor}",
        )  # fmt: skip
    return env


def gpu_tests(check: Check, tmp: Path) -> dict[str, Any]:
    """``python -m pytest -m gpu tests/test_gpu.py``: outcome of each test (from JUnit XML)."""
    xml = tmp / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-rA",
           f"--junitxml={xml}"]  # fmt: skip
    code, output, seconds = check.run(cmd, check.sizes.test_timeout, tmp / "gpu_tests.log")
    tests: dict[str, str] = {}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome = "passed"
            for kind in ("failure", "error", "skipped"):
                node = case.find(kind)
                if node is not None:
                    outcome = f"{kind}: {(node.get('message') or '')[:500]}"
            tests[case.get("name", "?")] = outcome
    counts = {k: sum(v.startswith(k) for v in tests.values()) for k in ("passed", "skipped")}
    section = {
        "returncode": code, "passed": counts["passed"], "skipped": counts["skipped"],
        "failed": len(tests) - counts["passed"] - counts["skipped"], "tests": tests,
        "wall_s": round(seconds, 1),
    }  # fmt: skip
    if code != 0:
        section["output_tail"] = _tail(output)
    return section


def best_score(folder: Path) -> tuple[float | None, Path | None, int | None]:
    """The best val/roc_auc, its checkpoint (ModelCheckpoint states under ``folder``), epochs."""
    import torch

    best: tuple[float | None, Path | None] = (None, None)
    epochs = None
    for path in sorted(folder.rglob("*.ckpt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        epochs = max(epochs or 0, int(checkpoint.get("epoch", -1)) + 1)
        for key, state in checkpoint.get("callbacks", {}).items():
            score = state.get("best_model_score") if "val/roc_auc" in key else None
            if score is not None and (best[0] is None or float(score) > best[0]):
                best = (float(score), Path(state.get("best_model_path") or path))
    return (*best, epochs)


def demo_fit(check: Check, tmp: Path, corpus: tuple[Path, Path]) -> dict[str, Any]:
    """``genretag fit --config configs/demo.yaml --trainer.precision bf16-mixed``."""
    root = tmp / "demo_fit"
    cmd = [sys.executable, "-m", "genretag", "fit", "--config", "configs/demo.yaml",
           "--trainer.precision", "bf16-mixed", "--trainer.default_root_dir", str(root),
           "--trainer.enable_progress_bar", "false", *check.sizes.fit_args]  # fmt: skip
    if check.result["quick"]:  # the generated corpus, not the demo's (synthesis takes ~20 s)
        meta, audio = corpus
        cmd += ["--data.init_args.demo_root", "null", "--data.init_args.meta_dir", str(meta),
                "--data.init_args.audio_dir", str(audio)]  # fmt: skip
    else:
        cmd += ["--data.init_args.demo_root", str(tmp / "demo")]
    code, output, seconds = check.run(cmd, check.sizes.fit_timeout, tmp / "demo_fit.log")
    score, ckpt, epochs = best_score(root)
    section: dict[str, Any] = {
        "command": " ".join(cmd[1:]), "returncode": code, "wall_s": round(seconds, 1),
        "best_val_roc_auc": None if score is None else round(score, 4),
        "checkpoint": str(ckpt) if ckpt else None, "epochs": epochs,
    }  # fmt: skip
    if code != 0 or score is None:
        raise RuntimeError(f"genretag fit exited with {code}; output tail:\n{_tail(output)}")
    return section


def train_step(check: Check) -> dict[str, Any]:
    """The fma_small model's ``training_step`` + AdamW step under bf16 autocast: clips/s."""
    import step  # benchmarks/step.py: its timer
    import torch
    import yaml

    from genretag.task import TaggingTask

    sizes, cuda = check.sizes, torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    config = yaml.safe_load((ROOT / "configs" / "fma_small.yaml").read_text())["model"]
    warnings.filterwarnings("ignore", ".*self.log.*")  # training_step logs; no Trainer here
    section: dict[str, Any] = {"model": "configs/fma_small.yaml", "model_args": config,
                               "seconds": sizes.step_s, "autocast": "bf16", "variants": {}}  # fmt: skip
    for compiled in (False, True) if sizes.compile else (False,):
        for batch in sizes.batches:
            name = f"bf16_b{batch}{'_compiled' if compiled else ''}"
            check.say(f"  train_step {name}")
            try:
                section["variants"][name] = _step_rate(
                    TaggingTask, step.timed, config, sizes, batch, compiled, device
                )
                section["variants"][name]["batch"] = batch
            except Exception as error:  # compile needs Triton (GPU) or a C++ compiler (CPU)
                if not compiled:
                    raise
                reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
                section["variants"][name] = {"skipped": reason}
            finally:
                torch._dynamo.reset()
    section["compile_skipped"] = None if sizes.compile else "--quick"
    return section


def _step_rate(
    task: type, timed: Callable, config: dict, sizes: Sizes, batch: int, compiled: bool,
    device: Any,
) -> dict[str, float]:  # fmt: skip
    """One variant: ms per step, clips/s, ms of the front-end alone and its share of the step.

    The batch is (batch, step_s x 16 kHz) white noise already on the device, targets (batch, 8).
    """
    import torch

    labels = [f"genre{i}" for i in range(8)]
    torch.manual_seed(0)
    model = task(labels=labels, **config).to(device).train()
    if compiled:
        model.trunk.compile()
        model.head.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-2)
    samples = round(sizes.step_s * model.hparams.sample_rate)
    data = {
        "audio": 0.1 * torch.randn(batch, samples, device=device),
        "target": (torch.rand(batch, len(labels), device=device) < 0.2).float(),
        "key": [str(i) for i in range(batch)],
    }
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def one() -> None:
        with autocast:
            loss = model.training_step(data, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    per_step = timed(one, device, sizes.steps, sizes.warmup)
    with torch.no_grad(), autocast:
        per_frontend = timed(lambda: model.frontend(data["audio"]), device, sizes.steps, 1)
    return {
        "ms_per_step": round(per_step * 1000, 2),
        "clips_per_s": round(batch / per_step, 1),
        "frontend_ms": round(per_frontend * 1000, 2),
        "frontend_share": round(per_frontend / per_step, 3),
    }


def corpus(check: Check, root: Path) -> tuple[dict[str, Any], dict[str, tuple[Path, Path]]]:
    """The FMA-layout MP3 corpora (benchmarks/_corpus.py), written on every core.

    ``tag``: distinct MP3s (tagging, the quick fit); ``epoch``: many tracks that link to a few
    MP3s, so that an epoch holds many batches for 16 workers (loader, cache epoch).
    """
    from _corpus import make_corpus

    from genretag.system import available_cores

    sizes, cores = check.sizes, available_cores()
    start = time.perf_counter()
    dirs = {
        "tag": make_corpus(root / "tag", sizes.per_genre, sizes.track_s, cores),
        "epoch": make_corpus(root / "epoch", sizes.epoch_per_genre, sizes.track_s, cores,
                             sizes.epoch_unique),
    }  # fmt: skip
    files = sorted(dirs["tag"][1].rglob("*.mp3"))
    return {
        "tracks": len(files), "track_s": sizes.track_s, "per_genre": sizes.per_genre,
        "epoch_tracks": len(list(dirs["epoch"][1].rglob("*.mp3"))),
        "epoch_unique_mp3s": sizes.epoch_unique, "write_s": round(time.perf_counter() - start, 1),
        "mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
    }, dirs  # fmt: skip


def loader(check: Check, data_dirs: tuple[Path, Path]) -> dict[str, Any]:
    """FMADataModule's training loader, streamed crops: clips/s at each worker count."""
    from loader import time_train_loader  # benchmarks/loader.py

    from genretag.data.datamodules import FMADataModule

    sizes, (meta, audio) = check.sizes, data_dirs
    figures: dict[str, dict] = {}
    for workers in sizes.workers:
        check.say(f"  loader {workers} workers")
        data = FMADataModule(
            meta_dir=str(meta), audio_dir=str(audio), window_seconds=sizes.crop_s,
            batch_size=sizes.loader_batch, num_workers=workers,
        )  # fmt: skip
        figures[str(workers)] = time_train_loader(data, sizes.min_time, 3)
    single = figures[str(sizes.workers[0])]["clips_per_s"] / sizes.workers[0]
    for workers, f in figures.items():
        f["efficiency"] = round(f["clips_per_s"] / (int(workers) * single), 2)
    return {"crop_s": sizes.crop_s, "batch_size": sizes.loader_batch, "source": "stream",
            "workers": figures}  # fmt: skip


def cache_epoch(check: Check, tmp: Path, data_dirs: tuple[Path, Path]) -> dict[str, Any]:
    """``genretag prepare`` into a cache, then the same fit streamed and from the cache."""
    import fit  # benchmarks/fit.py: run() and its epoch timer
    import torch

    sizes, (meta, audio) = check.sizes, data_dirs
    cache_dir = tmp / "cache"
    cmd = [sys.executable, "-m", "genretag", "prepare", "--config", "configs/fma_small.yaml",
           "--data.init_args.meta_dir", str(meta), "--data.init_args.audio_dir", str(audio),
           "--data.init_args.cache_dir", str(cache_dir), "--no-progress"]  # fmt: skip
    code, output, seconds = check.run(cmd, 120, tmp / "prepare.log")
    if code != 0:
        raise RuntimeError(f"genretag prepare exited with {code}:\n{_tail(output)}")
    prepared = [line for line in output.splitlines() if line.startswith("prepared ")]
    cuda = torch.cuda.is_available()
    args = argparse.Namespace(epochs=sizes.epochs, window=sizes.crop_s,
                              batch_size=sizes.loader_batch, workers=max(sizes.workers))  # fmt: skip
    model_kwargs = {} if cuda else fit.TINY  # on a CPU the default model hides the data path
    check.say("  cache_epoch streamed")
    stream = fit.run(meta, audio, None, args, model_kwargs)
    check.say("  cache_epoch cached")
    cached = fit.run(meta, audio, str(cache_dir), args, model_kwargs)
    last_stream, last_cache = stream[-1], cached[-1]
    return {
        "prepare_s": round(seconds, 1), "prepare": prepared[-1] if prepared else None,
        "model": "default" if cuda else "tiny", "workers": args.workers,
        "batch_size": args.batch_size, "epochs": args.epochs, "epoch_reported": len(stream),
        "stream_train_s": last_stream["train_s"], "cache_train_s": last_cache["train_s"],
        "stream_clips_per_s": last_stream["train_clips_per_s"],
        "cache_clips_per_s": last_cache["train_clips_per_s"],
        "speedup": round(last_stream["train_s"] / max(last_cache["train_s"], 1e-9), 2),
        "runs": {"stream": stream, "cache": cached},
    }  # fmt: skip


def tag(check: Check, tmp: Path, data_dirs: tuple[Path, Path], ckpt: str | None) -> dict:
    """``genretag tag`` of the corpus with the demo checkpoint: its summary's x realtime."""
    source = "demo_fit"
    if ckpt is None or not Path(ckpt).exists():  # the fit failed: an untrained demo-size model
        import tagging  # benchmarks/tagging.py

        ckpt, source = str(tagging.save_checkpoint(tmp / "demo.ckpt", "demo")), "untrained demo"
    workers = check.sizes.tag_workers
    cmd = [sys.executable, "-m", "genretag", "tag", str(data_dirs[1]), "--ckpt", ckpt,
           "--out", str(tmp / "tags.csv"), "--workers", str(workers)]  # fmt: skip
    code, output, seconds = check.run(cmd, 180, tmp / "tag.log")
    found = REALTIME.findall(output)
    if code != 0 or not found:
        raise RuntimeError(f"genretag tag exited with {code}; output tail:\n{_tail(output)}")
    files, wall, speed = found[-1]
    return {
        "checkpoint": source, "workers": workers, "files": int(files), "tag_s": float(wall),
        "x_realtime": int(speed), "wall_s_with_startup": round(seconds, 1),
        "summary": next(line for line in output.splitlines() if REALTIME.search(line)).strip(),
    }  # fmt: skip


def summary(result: dict[str, Any]) -> str:
    """One line: the headline figure of each part, or that it failed."""

    def get(part: str, *keys: str) -> Any:
        value: Any = result.get(part, {})
        for key in keys:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return None if value == {} else value

    steps = get("train_step", "variants") or {}
    best = max(((v["clips_per_s"], k, v["frontend_share"]) for k, v in steps.items()
                if "clips_per_s" in v), default=None)  # fmt: skip
    workers = get("loader", "workers") or {}
    top = workers[max(workers, key=int)] if workers else {}
    parts = [
        f"{get('env', 'gpu') or 'CPU'}",
        f"tests {get('gpu_tests', 'passed')} passed/{get('gpu_tests', 'failed')} failed/"
        f"{get('gpu_tests', 'skipped')} skipped",
        f"demo fit {get('demo_fit', 'wall_s')} s, best val/roc_auc "
        f"{get('demo_fit', 'best_val_roc_auc')}",
        f"step {best[1]} {best[0]} clips/s (front-end {best[2]:.0%})" if best else "step -",
        f"loader {max(workers, key=int) if workers else '-'} workers {top.get('clips_per_s')} "
        f"clips/s (efficiency {top.get('efficiency')})",
        f"epoch cached {get('cache_epoch', 'cache_train_s')} s vs streamed "
        f"{get('cache_epoch', 'stream_train_s')} s",
        f"tag {get('tagging', 'x_realtime')}x realtime",
    ]
    failed = [k for k, v in result.items() if isinstance(v, dict) and "error" in v]
    return (
        "# device check: " + "; ".join(parts) + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="hide any GPU (CUDA_VISIBLE_DEVICES='')")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: CI's dry run, < 90 s")
    parser.add_argument("--out", type=Path, help="JSON file (default $OUT/device_check.json)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after which parts still to come are skipped "
                        "(default 450; none with --quick)")  # fmt: skip
    args = parser.parse_args()
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported, here and in children
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    default_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path.cwd()
    out = args.out or default_dir / "device_check.json"
    deadline = args.deadline or (None if args.quick else 450.0)
    check = Check(out, QUICK if args.quick else FULL, args.quick, args.cpu)
    check.say(f"device check ({'quick' if args.quick else 'full'}) -> {out}")
    env = check.part("env", environment)
    print(json.dumps({"env": env}), flush=True)
    if env.get("missing"):
        check.say(f"MISSING packages: {', '.join(env['missing'])}: run `bash benchmarks/"
                  "device_wheels.sh` here and carry .whl (this file's docstring)")  # fmt: skip
    if not env.get("cuda_available") and not args.cpu:
        check.say("no CUDA GPU: running on the CPU (the gpu tests skip; use --quick here)")
    with tempfile.TemporaryDirectory(prefix="device_check-") as name:
        tmp, made = Path(name), {}

        def corpus_part() -> dict[str, Any]:
            section, made["dirs"] = corpus(check, tmp / "corpus")
            return section

        def dirs(which: str = "tag") -> tuple[Path, Path]:
            if "dirs" not in made:
                raise RuntimeError("no corpus (see the corpus part's error)")
            return made["dirs"][which]

        parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("corpus", corpus_part),
            ("gpu_tests", lambda: gpu_tests(check, tmp)),
            ("demo_fit", lambda: demo_fit(check, tmp, dirs())),
            ("train_step", lambda: train_step(check)),
            ("loader", lambda: loader(check, dirs("epoch"))),
            ("cache_epoch", lambda: cache_epoch(check, tmp, dirs("epoch"))),
            (
                "tagging",
                lambda: tag(check, tmp, dirs(), check.result["demo_fit"].get("checkpoint")),
            ),
        ]
        for name_, fn in parts:
            if deadline is not None and check.elapsed() > deadline:
                check.result[name_] = {"error": f"skipped: past the {deadline:g} s deadline"}
                check.say(f"{name_} skipped (deadline)")
                continue
            check.part(name_, fn)
    check.write()
    print(json.dumps(check.result, default=str))
    line = summary(check.result)
    print(line, flush=True)
    tests = check.result.get("gpu_tests", {})
    return 1 if "FAILED" in line or tests.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
