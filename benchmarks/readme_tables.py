"""The README's tables, regenerated from runs and benchmark output instead of typed by hand.

    python benchmarks/readme_tables.py --train                      # fit the demo (timed), then evaluate
    python benchmarks/readme_tables.py --run-dir lightning_logs/version_0
    python benchmarks/readme_tables.py --perf decode.json step.json loader.json tagging.json

Results (``--train`` / ``--run-dir``): ``<run>/checkpoints/best.ckpt`` is evaluated exactly as
``python -m genretag validate|test --config configs/demo.yaml --ckpt_path <run>/checkpoints/best.ckpt``
does it (the same LightningCLI, in this process, with no logger so that no run folder is added),
and the metrics become the table ``split | ROC-AUC | PR-AUC | F1``. ``--train`` first runs
``python -m genretag fit --config configs/demo.yaml`` (arguments after ``--`` are added to it) and
measures its wall time, which counts the demo corpus's synthesis when data/demo is missing.

Performance (``--perf``): each file holds the JSON object a benchmark printed (``python
benchmarks/decode.py | head -1 > decode.json``); each becomes rows of ``what | measured | target``.
A ``--quick`` run is marked as such in its row.

Prints the Markdown table(s), then one JSON object with the figures they show.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"validate": ("val", "validation (best epoch)"), "test": ("test", "test")}
METRICS = {"roc_auc": "ROC-AUC (macro)", "pr_auc": "PR-AUC (macro)", "f1": "F1 (macro)"}


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the header row, the ``|---|`` rule, one line per row."""
    rule = "|" + "---|" * len(header)
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, *rows]]
    return "\n".join([lines[0], rule, *lines[1:]])


# -- results ------------------------------------------------------------------------------------
def evaluate(config: str, ckpt: Path, command: str) -> dict[str, float]:
    """``genretag validate|test --config CONFIG --ckpt_path CKPT``: its ``{metric: value}``."""
    from genretag.cli import lightning_cli

    stage = STAGES[command][0]
    with tempfile.TemporaryDirectory() as tmp:  # the CLI's config.yaml goes here, not in a run
        args = [command, "--config", config, "--ckpt_path", str(ckpt), "--trainer.logger",
                "false", "--trainer.default_root_dir", tmp, "--trainer.enable_progress_bar",
                "false"]  # fmt: skip
        metrics = lightning_cli(args).trainer.callback_metrics
    return {name: round(float(metrics[f"{stage}/{name}"]), 4) for name in METRICS}


def results_table(scores: dict[str, dict[str, float]]) -> str:
    """``{"validate"|"test": {metric: value}}`` -> the README's results table (3 decimals)."""
    rows = [
        [STAGES[command][1]]
        + [f"**{v:.3f}**" if k == "roc_auc" else f"{v:.3f}" for k, v in values.items()]
        for command, values in scores.items()
    ]
    return markdown(["split", *METRICS.values()], rows)


def train(config: str, extra: list[str]) -> tuple[Path, dict[str, Any]]:
    """``python -m genretag fit --config CONFIG *extra``, timed: (its run folder, timing)."""
    logs = ROOT / "lightning_logs"
    before = set(logs.glob("version_*"))
    demo_existed = (ROOT / "data" / "demo").exists()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "genretag", "fit", "--config", config, *extra],
                          cwd=ROOT)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"readme_tables: genretag fit --config {config} failed (exit {done.returncode})")
    new = sorted(set(logs.glob("version_*")) - before, key=lambda p: int(p.name.split("_")[1]))
    if not new:
        sys.exit(f"readme_tables: genretag fit wrote no new run under {logs}")
    timing = {"fit_wall_s": round(seconds, 1), "synthesized_demo_corpus": not demo_existed}
    return new[-1], timing


# -- performance --------------------------------------------------------------------------------
def verdict(measured: float | None, target: float, at_least: bool = True) -> str:
    """ "met" / "not met" / "not measured" for one target."""
    if measured is None:
        return "not measured"
    return "met" if (measured >= target if at_least else measured <= target) else "not met"


def _decode(r: dict) -> list[list[str]]:
    f, t = r["formats"], r["targets"]
    m = f["44k_stereo"]
    same = (
        "; whole-file samples identical to librosa's"
        if m["check"]["full_16k_vs_librosa_max_abs"] == 0
        else ""
    )
    crop = t["crop_10s_per_core_per_s"]
    ratio = t["crop_10s_vs_librosa_offset"]
    return [
        [f"random 10 s crop from a {r['file_seconds']:g} s 44.1 kHz stereo 320 kbit/s MP3 with "
         "ID3 + cover art, to 16 kHz mono (`decode.py`)",
         f"**{m['crop_10s']['per_core_per_s']} /s per core** (48 kHz: "
         f"{f['48k_stereo']['crop_10s']['per_core_per_s']}, mono: "
         f"{f['44k_mono']['crop_10s']['per_core_per_s']}); 3 s crops "
         f"{m['crop_3s']['per_core_per_s']} /s; whole clips {m['full_clip']['per_core_per_s']} /s",
         f">= {crop['target']:g} /s/core: {verdict(crop['measured'], crop['target'])}"],
        ["the same crop vs `librosa.load(path, sr=16000, mono=True, offset=, duration=)`",
         f"**{m['crop_10s_vs_librosa_offset']}x** (librosa: {m['librosa_offset_crop']['per_core_per_s']}"
         f" /s)",
         f">= {ratio['target']:g}x: {verdict(ratio['measured'], ratio['target'])}"],
        ["the same crop vs `librosa.load(path, sr=16000, mono=True)` of the whole file, then "
         "slicing", f"{m['crop_10s_vs_librosa_full_load']}x (librosa: "
         f"{m['librosa_full_load']['per_core_per_s']} /s); whole clips "
         f"{m['full_clip_vs_librosa_full_load']}x{same}", ""],
    ]  # fmt: skip


def _loader(r: dict) -> list[list[str]]:
    stream, cache = r["sources"]["stream"], r["sources"]["cache"]
    target = r["targets"]["efficiency_at_2_workers"]
    workers = " / ".join(stream)
    return [
        [f"training DataLoader, {r['crop_seconds']:g} s crops (`loader.py`)",
         f"{' / '.join(str(f['clips_per_s']) for f in stream.values())} clips/s at {workers} "
         f"workers; efficiency {target['measured']} at 2 (CPU cost per clip: "
         f"{target['cpu_efficiency']})",
         f">= {target['target']:.0%} at 2 workers: {verdict(target['measured'], target['target'])}"],
        ["the same from the decoded cache (`--data.cache_dir`)",
         f"{' / '.join(str(f['clips_per_s']) for f in cache.values())} clips/s at "
         f"{' / '.join(cache)} workers", ""],
    ]  # fmt: skip


def _step(r: dict) -> list[list[str]]:
    v = {k: x for k, x in r["variants"].items() if "clips_per_s" in x}
    shares = [x["frontend_share"] for x in v.values()]
    loop = r["loop_without_trainer"]
    targets = r.get("targets")
    if targets:
        clips, share = targets["clips_per_s_bf16"], targets["frontend_share"]
        target = (
            f"bf16 >= {clips['target']:,} clips/s: {verdict(clips['measured'], clips['target'])}; "
            f"front-end <= {share['target']:.0%}: {verdict(share['measured'], share['target'], False)}"
        )
    else:
        target = "GPU bf16 >= 5,000 clips/s, front-end <= 15%: not measured"
    return [
        [f"training step in a Trainer, fma_small model (mixup, SpecAugment, AdamW, one-cycle), "
         f"{r['device']}, {r['batch']} x {r['seconds']:g} s (`step.py`)",
         ", ".join(f"{k} {x['clips_per_s']}" for k, x in v.items()) + " clips/s; front-end "
         f"{min(shares):.1%}-{max(shares):.1%} of the step; hand-written loop without Trainer, "
         f"mixup and scheduler: fp32 {loop['fp32']['clips_per_s']}, bf16 {loop['bf16']['clips_per_s']}",
         target],
    ]  # fmt: skip


def _tagging(r: dict) -> list[list[str]]:
    x, peak = r["targets"]["x_realtime_2_cores"], r["targets"]["peak_mb"]
    rows = [
        [f"`tag`, {name} model, {r['machine']['cores']} CPU cores (`tagging.py`)",
         f"{speed:g}x realtime (about {x['idle_2_cores'][name]:g}x projected on 2 idle cores)",
         f">= {x['target']:g}x: {verdict(speed, x['target'])}"]
        for name, speed in x["measured"].items()
    ]  # fmt: skip
    memory = ", ".join(f"{f['peak_pss_mb']} MB ({f['model']} model)" for f in r["long_file"])
    minutes = r["long_file"][0]["audio_s"] / 60
    rows.append([f"peak memory, one {minutes:g}-minute MP3", f"{memory} PSS",
                 f"< {peak['target'] / 1024:g} GB: {verdict(peak['measured'], peak['target'], False)}"])  # fmt: skip
    return rows


RENDERERS: dict[str, Callable[[dict], list[list[str]]]] = {
    "decode": _decode, "loader": _loader, "step": _step, "tagging": _tagging,
}  # fmt: skip


PERF_HEADER = ["what (command)", "measured", "target"]


def perf_rows(results: list[dict]) -> list[list[str]]:
    """Benchmark JSON objects -> rows of the README's ``what (command) | measured | target``."""
    rows = []
    for result in results:
        name = result.get("benchmark")
        if name not in RENDERERS:
            sys.exit(
                f"readme_tables: no table rows for benchmark {name!r}; one of {sorted(RENDERERS)}"
            )
        for row in RENDERERS[name](result):
            rows.append([row[0], row[1] + (" (quick run)" if result.get("quick") else ""), row[2]])
    return rows


def perf_table(results: list[dict]) -> str:
    """Benchmark JSON objects -> the README's performance table (Markdown)."""
    return markdown(PERF_HEADER, perf_rows(results))


def read_json(path: Path) -> dict:
    """The first JSON object line of a benchmark's saved output (its summary line is skipped)."""
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"readme_tables: {path} holds no JSON line; save a benchmark's output there")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", action="store_true", help="fit the demo first, timed")
    mode.add_argument("--run-dir", type=Path, help="a finished run: lightning_logs/version_N")
    mode.add_argument("--perf", type=Path, nargs="+", help="benchmark JSON files")
    parser.add_argument("--config", default="configs/demo.yaml", help="the run's config")
    args = parser.parse_args(argv)
    if args.perf:
        rows = perf_rows([read_json(p) for p in args.perf])
        print(markdown(PERF_HEADER, rows))
        print(
            json.dumps({"files": [str(p) for p in args.perf], "header": PERF_HEADER, "rows": rows})
        )
        return
    report: dict[str, Any] = {"config": args.config}
    run = args.run_dir
    if args.train:
        run, report["timing"] = train(args.config, extra)
    ckpt = run / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        sys.exit(f"readme_tables: {ckpt} is missing; pass --run-dir of a finished `genretag fit`")
    report.update(run=str(run), ckpt=str(ckpt))
    report["scores"] = {command: evaluate(args.config, ckpt, command) for command in STAGES}
    print(results_table(report["scores"]))
    if "timing" in report:
        print(f"\nfit: {report['timing']['fit_wall_s']:.0f} s wall")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
