"""``genretag tag``: score a music library with trained checkpoints, write tables, tag files.

    scan (tagger.scan) -> decode + windows on workers, batched inference (tagger.stream, through
    genretag.inference) -> per file: decide, write the genre tag (tagger.filetags), record the
    row (tagger.outputs)

A re-run with the same ``--out`` skips the files already there (same path, size and mtime).
Ranks (``RANK``/``WORLD_SIZE`` from torchrun) tag every ``WORLD_SIZE``-th file, each into its own
part; rank 0 merges the parts after a barrier.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch

from genretag.errors import ConfigError
from genretag.inference import PRECISIONS, Predictor, load_predictor
from genretag.io import file_key
from genretag.system import available_cores
from genretag.tagger import filetags
from genretag.tagger.outputs import Outputs, Table, sibling
from genretag.tagger.scan import display_path, real_path, scan
from genretag.tagger.stream import TrackResult, infer

log = logging.getLogger(__name__)


EXAMPLES = """examples:
  genretag tag ~/Music --ckpt best.ckpt --out tags.csv
  genretag tag ~/Music --ckpt best.ckpt --out tags.jsonl --top-k 3 --threshold 0.3
  genretag tag ~/Music --ckpt best.ckpt --out tags.csv --segments 1.0   # per-second timeline
  genretag tag ~/Music --ckpt best.ckpt --write-tags --dry-run          # preview, then without --dry-run
  genretag tag 'Music/**/*.flac' --ckpt a.ckpt --ckpt b.ckpt --ensemble geometric --out tags.csv
  torchrun --nproc-per-node 4 -m genretag tag ~/Music --ckpt best.ckpt --out tags.csv

Re-running with the same --out continues an interrupted run. Exit code: 0 all files tagged,
1 some files failed (listed on stderr and in <out>.errors.csv), 2 a usage or checkpoint error.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (via ConfigError)
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="genretag tag",
        description="Tag audio files with the genres a trained checkpoint predicts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("inputs", nargs="+", metavar="PATH", help="audio files, folders (recursive) or globs")
    add("--ckpt", action="append", required=True, metavar="FILE", help="repeat for an ensemble")
    add("--out", type=Path, metavar="FILE", help="results table, .csv or .jsonl (resumable)")
    add("--top-k", type=int, default=3, metavar="K", help="genres listed/written per file (3)")
    add("--threshold", type=float, default=0.0, metavar="P", help="least score to list/write")
    add("--aggregate", choices=("mean", "max"), default="mean", help="window -> track scores")
    add("--ensemble", choices=("arithmetic", "geometric"), default="arithmetic",
        help="how the probabilities of several --ckpt are averaged")  # fmt: skip
    add("--segments", type=float, metavar="S", help="timeline of window scores every S seconds")
    add("--hop", type=float, metavar="S", help="seconds between windows (default: one window)")
    add("--workers", type=int, metavar="N", help="decoding processes (default: a quarter of the "
        "cores on CPU, where inference is the bottleneck; all but one with a GPU)")  # fmt: skip
    add("--batch-size", type=int, metavar="N", help="windows per batch (8 on CPU, 64 on GPU)")
    add("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1 ...")
    add("--precision", choices=PRECISIONS, default="fp32",
        help="model arithmetic: fp32 (default), bf16 (AVX-512 BF16 CPUs, GPUs), int8 (CPU)")  # fmt: skip
    add("--write-tags", action="store_true", help="write the genres into the files' tags")
    add("--mode", choices=filetags.MODES, default="skip",
        help="for files that have a genre: keep it (skip), replace it, or add to it (merge)")  # fmt: skip
    add("--dry-run", action="store_true", help="with --write-tags: print the changes only")
    add("--quiet", action="store_true", help="no progress bar: errors and the summary only")
    return p


@dataclass
class _Summary:
    known: int = 0
    tagged: int = 0
    failed: int = 0
    seconds: float = 0.0
    changed: int = 0
    truncated: int = 0
    dry_run: bool = False
    start: float = field(default_factory=time.monotonic)

    def line(self, out: Path | None) -> str:
        wall = time.monotonic() - self.start
        speed = self.seconds / max(wall, 1e-9)
        text = f"tagged {self.tagged} files ({self.seconds / 3600:.2f} h of audio) in {wall:.1f} s"
        text += f" ({speed:.0f}x realtime)"
        text += f", {self.known} already done" if self.known else ""
        if self.changed:
            text += f", {self.changed} genre tags {'to change (dry run)' if self.dry_run else 'written'}"
        where = f" (see {sibling(out, '.errors.csv')})" if out else ""
        if self.truncated:
            text += f", {self.truncated} truncated (tagged from what decodes{where})"
        if self.failed:
            text += f"; {self.failed} FAILED{where}"
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """``genretag tag ...``: returns 0 if every file was tagged, 1 if some failed, 2 on usage errors."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        return _run(args)
    except ConfigError as error:
        print(f"genretag tag: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except KeyboardInterrupt:
        print("genretag tag: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


def _check(args: argparse.Namespace) -> None:
    if not args.out and not args.write_tags:
        raise ConfigError("nothing to do: give --out FILE and/or --write-tags")
    if args.segments is not None and not args.out:
        raise ConfigError("--segments needs --out (the timeline goes next to it)")
    if args.dry_run and not args.write_tags:
        raise ConfigError("--dry-run previews --write-tags; add --write-tags")
    for name, value, low in [
        ("--top-k", args.top_k, 1),
        ("--workers", args.workers, 0),
        ("--batch-size", args.batch_size, 1),
    ]:
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    for name, value in [("--segments", args.segments), ("--hop", args.hop)]:
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
    if not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.segments and args.hop and args.segments != args.hop:
        raise ConfigError("--segments sets the hop between windows; leave out --hop")


def _device(spec: str) -> torch.device:
    if spec != "auto":
        try:
            device = torch.device(spec)
        except RuntimeError as error:
            raise ConfigError(f"--device {spec}: {error}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA GPU here; use --device cpu (or auto)")
        return device
    if torch.cuda.is_available():
        return torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
        )
    return torch.device("cpu")


def cpu_threads(workers: int) -> int:
    """Torch threads for inference on CPU: the cores the decoding workers leave free.

    Two threads fighting decoders for two cores make the GRU's many small ops ~10x slower.
    OMP_NUM_THREADS, when set, wins.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, available_cores() - workers)


def _ranks() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; joins the process group when sharded."""
    world = int(os.environ.get("WORLD_SIZE") or 1)
    rank = int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)
    if world > 1:
        import torch.distributed as dist

        if not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
            raise ConfigError(
                "WORLD_SIZE > 1 needs MASTER_ADDR and MASTER_PORT (launch with torchrun)"
            )
        if not dist.is_initialized():  # a shard can take hours: a long barrier timeout
            dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(days=7))
    return rank, world


def _run(args: argparse.Namespace) -> int:
    _check(args)
    log.setLevel(logging.WARNING if args.quiet else logging.NOTSET)
    device = _device(args.device)
    ensemble = load_predictor(args.ckpt, device, args.ensemble, precision=args.precision)
    if args.workers is None:
        args.workers = (
            min(16, available_cores() - 1)
            if device.type == "cuda"
            else max(1, available_cores() // 4)
        )
    rank, world = _ranks()
    mine = scan(args.inputs)[rank::world]
    summary = _Summary(dry_run=args.dry_run)
    outputs, todo = _resume(args, ensemble, mine, rank, world, summary)
    log.info(
        "%d audio files%s: %d to tag",
        len(mine),
        f" (rank {rank} of {world})" if world > 1 else "",
        len(todo),
    )
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(args.workers))
    try:
        if outputs and args.write_tags and summary.known:
            known = set(map(display_path, mine)) - set(map(display_path, todo))
            _retag_known(outputs, known, args, summary)
        _tag(todo, ensemble, args, outputs, summary)
    finally:
        torch.set_num_threads(threads)
        if outputs:
            outputs.close()
    failed = summary.failed
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every part is complete
    if outputs and rank == 0:
        failed = outputs.finish()  # this run's failures on every rank
    if world > 1:
        dist.destroy_process_group()
    log.log(logging.ERROR if summary.failed else logging.INFO, "%s", summary.line(args.out))
    if failed > summary.failed:
        errors = sibling(args.out, ".errors.csv")
        log.error("%d files failed on other ranks (see %s)", failed - summary.failed, errors)
    return 1 if failed or summary.failed else 0


def _resume(
    args: argparse.Namespace,
    ensemble: Predictor,
    mine: list[Path],
    rank: int,
    world: int,
    summary: _Summary,
) -> tuple[Outputs | None, list[Path]]:
    """Open the outputs of --out; returns them and the files not yet there (same size, mtime)."""
    if not args.out:
        return None, mine
    fmt = "jsonl" if args.out.suffix.lower() == ".jsonl" else "csv"
    table = Table(ensemble.labels, args.top_k, args.threshold, fmt)
    srt = ensemble.task == "multiclass"
    outputs = Outputs(args.out, table, rank, world, args.segments is not None, srt)
    done = outputs.done()
    todo = [p for p in mine if done.get(display_path(p)) != file_key(p)]
    summary.known = len(mine) - len(todo)
    outputs.open()
    return outputs, todo


def _tag(
    todo: list[Path],
    ensemble: Predictor,
    args: argparse.Namespace,
    outputs: Outputs | None,
    summary: _Summary,
) -> None:
    """Infer ``todo``, write tags and rows as files finish, with a progress bar."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    table = outputs.table if outputs else Table(ensemble.labels, args.top_k, args.threshold, "csv")
    hop_s = args.segments or args.hop or ensemble.window_seconds
    hop = max(1, round(hop_s * ensemble.sample_rate))
    args.window_seconds = ensemble.window_seconds
    batch_size = args.batch_size or (64 if ensemble.device.type == "cuda" else 8)
    bar = tqdm(
        total=len(todo),
        unit="file",
        disable=args.quiet or not todo,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    batches = infer(
        todo, ensemble, hop, batch_size, args.workers, args.aggregate, args.segments is not None
    )
    with bar, logging_redirect_tqdm() if not bar.disable else contextlib.nullcontext():
        for results in batches:
            rows, timelines = [], []
            for result in results:
                row, line = _one_file(result, table, args, outputs, summary)
                rows += row
                timelines += line
            if outputs:
                outputs.add(rows, timelines)
            if results:
                bar.update(len(results))
                speed = summary.seconds / max(time.monotonic() - summary.start, 1e-9)
                bar.set_postfix_str(f"audio {speed / 3600:.3f} h/s = {speed:.0f}x", refresh=False)


def _one_file(
    result: TrackResult,
    table: Table,
    args: argparse.Namespace,
    outputs: Outputs | None,
    summary: _Summary,
) -> tuple[list[str], list[str]]:
    """One finished file: decide its genres (pure), write them into the file, then record the
    row (after the write, so the row holds the file's new size and mtime and a resumed run
    knows it is done). Returns the row and timeline lines to append."""
    shown = display_path(result.path)
    if result.error is not None:
        message = f"{shown}: {result.error}"
        log.error("%s", message)
        summary.failed += 1
        if outputs:
            outputs.error(shown, result.error)
        return [], []
    if result.truncated is not None:  # tagged all the same: what decoded is real audio
        log.warning("%s: %s", shown, result.truncated)
        summary.truncated += 1
        if outputs:
            outputs.error(shown, result.truncated)
    genres = [label for label, _ in table.select(result.scores)]
    if args.write_tags:
        _write_tags(result.path, genres, args, outputs, summary)
    summary.tagged += 1
    summary.seconds += result.duration
    if not outputs:
        return [], []
    key = file_key(result.path)
    row = table.line(shown, key, result.duration, result.scores)
    if result.timeline is None:
        return [row], []
    hop_s = args.segments or args.hop or args.window_seconds
    line = outputs.timeline(
        shown, key, result.timeline, result.starts, result.duration, hop_s, args.window_seconds
    )
    return [row], [line]


def _write_tags(
    path: Path,
    genres: list[str],
    args: argparse.Namespace,
    outputs: Outputs | None,
    summary: _Summary,
) -> None:
    try:
        change = filetags.write_genres(path, genres, args.mode, dry_run=args.dry_run)
    except filetags.TagWriteError as error:
        log.error("%s", error)
        summary.failed += 1
        if outputs:
            outputs.error(display_path(path), error.reason)
        return
    if change.changed:
        summary.changed += 1
        if args.dry_run:
            print(change.describe(), flush=True)
        else:
            log.info("%s", change.describe())


def _retag_known(
    outputs: Outputs, known: set[str], args: argparse.Namespace, summary: _Summary
) -> None:
    """--write-tags for files already scored in --out: their stored scores decide the genres.

    A file whose tag changes gets its row again with the new size/mtime (the last row counts).
    """
    latest: dict[str, int] = {}
    for number, (path, _, _) in enumerate(outputs.rows_in()):
        if path in known:
            latest[path] = number
    rekeyed = []
    for number, (path, _, row) in enumerate(outputs.rows_in()):
        if latest.get(path) != number:
            continue
        genres = [label for label, _ in outputs.table.select(outputs.table.scores(row))]
        before = file_key(real_path(path))
        _write_tags(real_path(path), genres, args, outputs, summary)
        after = file_key(real_path(path))
        if after != before:
            rekeyed.append(outputs.table.rekey(row, after))
    outputs.add(rekeyed, [])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
