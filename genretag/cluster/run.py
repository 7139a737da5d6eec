"""``genretag tag ... --engine ray``: the catalogue run on Ray Data, and its options.

    list the files (sources) -> skip those already in --out (results.Catalogue.done)
    -> ray.data.from_items -> map_batches(decode_batch): Ray tasks, --decode-cpus at once
    -> map_batches(Tagger): --actors actors, --actor-cpus / --gpus-per-actor each
    -> the driver writes Parquet parts as blocks arrive (ROWS_PER_PART); errors, CSV at the end

Without ``--address`` a local Ray starts in this process (a laptop); with it (or RAY_ADDRESS)
the run joins a cluster started with ``ray start --head``. A dead task or actor is retried by
Ray; the parts are whole or absent, so a re-run continues where a killed one stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genretag.errors import ConfigError
from genretag.io import exclusive
from genretag.tagger import choice

from .decode import Cut, decode_batch
from .predict import Scoring, Tagger, load
from .results import Catalogue, beside, write_errors
from .sources import Entry, is_uri, list_files

log = logging.getLogger(__name__)

DECODE_MEMORY = 512 << 20  # bytes a decode task reserves: one file's windows (an hour: 230 MB)
FILES_PER_CALL = 8  # files per actor call (one output block)
ROWS_PER_PART, PART_SECONDS = 4096, 60.0  # a part when either is reached (10M files: ~2,500)
MAX_FILES_PER_BLOCK = 16  # files per decode task (a killed task redoes at most these)
_RAY_ONLY = ("address", "decode_cpus", "actors", "actor_cpus", "gpus_per_actor")
_NOT_WITH_RAY = ("write_tags", "segments", "report", "playlists", "workers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--engine ray`` on the ``tag`` parser."""
    group = parser.add_argument_group("catalogue scale: --engine ray (needs genretag[ray])")
    add = group.add_argument
    add("--engine", choices=("local", "ray"), default="local",
        help="ray: tag on Ray Data (a local Ray, or --address); --out is then a Parquet "
        "folder (tags.parquet), or tags.csv for the CSV too")  # fmt: skip
    add("--address", metavar="ADDR", help="a Ray cluster to join (ray start --head; default: "
        "RAY_ADDRESS, else a Ray started in this process)")  # fmt: skip
    add("--decode-cpus", type=int, metavar="N",
        help="decode tasks at once (default: the CPUs the actors leave)")  # fmt: skip
    add("--actors", type=int, metavar="N",
        help="predictor actors (default: one per GPU; without GPUs, 3/4 of the CPUs' worth)")  # fmt: skip
    add("--actor-cpus", type=float, metavar="C",
        help="CPUs (torch threads) per actor (default 1; 2 on CPU nodes of 8+ cores)")  # fmt: skip
    add("--gpus-per-actor", type=float, metavar="G",
        help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")  # fmt: skip


def check(args: argparse.Namespace) -> None:
    """ConfigError for options that do not go with the chosen --engine."""
    if args.engine != "ray":
        given = [f"--{n.replace('_', '-')}" for n in _RAY_ONLY if getattr(args, n) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --engine ray")
        return
    given = [
        f"--{n.replace('_', '-')}" for n in _NOT_WITH_RAY if getattr(args, n) not in (None, False)
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: not with --engine ray (a catalogue run writes tables; "
            f"write tags with a local tag run)"
        )
    if not args.out:
        raise ConfigError("--engine ray: give --out tags.parquet (or tags.csv)")
    if args.device != "auto":
        raise ConfigError(
            "--engine ray: the actors' device comes from --gpus-per-actor, not --device"
        )
    for name, value, low in [("--actors", args.actors, 1), ("--decode-cpus", args.decode_cpus, 1)]:
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if args.actor_cpus is not None and not args.actor_cpus > 0:
        raise ConfigError(f"--actor-cpus must be a positive number, got {args.actor_cpus}")
    if args.gpus_per_actor is not None and not args.gpus_per_actor >= 0:
        raise ConfigError(f"--gpus-per-actor must be 0 or more, got {args.gpus_per_actor}")


@dataclass(frozen=True)
class Plan:
    """How the stages are sized on the cluster's resources."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    decode_tasks: int
    decode_cpus: float  # per task
    files_per_block: int

    @property
    def threads(self) -> int:
        return max(1, int(self.actor_cpus))


def plan(cpus: float, gpus: float, files: int, args: argparse.Namespace) -> Plan:
    """Actors and decode tasks for ``cpus``/``gpus`` (Ray's logical resources) and ``files``.

    With GPUs: an actor per GPU (1 CPU each) and every other CPU decoding. Without: CPU
    inference is the slow stage, so actors get 3/4 of the CPUs (as ``tag`` leaves a quarter of
    the cores to its decoders). Whatever is asked, both stages fit at once (a 1-CPU laptop
    splits its CPU), so neither waits forever for the other's resources.
    """
    gpus_each = args.gpus_per_actor if args.gpus_per_actor is not None else float(gpus >= 1)
    actor_cpus = args.actor_cpus or (2.0 if not gpus_each and cpus >= 8 else 1.0)
    if args.actors:
        actors = args.actors
    elif gpus_each:
        actors = max(1, int(gpus // gpus_each))
    else:
        actors = max(1, int(cpus * 0.75 // actor_cpus))
    if actors * actor_cpus >= cpus:  # leave room to decode
        actor_cpus = cpus / (2 * actors)
    free = cpus - actors * actor_cpus
    decode_tasks = args.decode_cpus or max(1, int(free))
    per_block = min(MAX_FILES_PER_BLOCK, max(1, math.ceil(files / (4 * decode_tasks))))
    return Plan(
        actors, actor_cpus, gpus_each, decode_tasks, min(1.0, free / decode_tasks), per_block
    )


def outputs(out: Path) -> tuple[str, str | None]:
    """(the Parquet folder, the CSV or None) of ``--out``: ``x.csv`` is both x.parquet and x.csv."""
    text = str(out)
    scheme, sep, rest = text.partition(":/")
    if sep and not rest.startswith("/") and is_uri(f"{scheme}://x"):  # Path made s3:// s3:/
        text = f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
    if text.lower().endswith(".csv"):
        return beside(text, ".parquet"), text
    if text.lower().endswith(".jsonl"):
        raise ConfigError(f"--out {out}: --engine ray writes a .parquet folder (or a .csv)")
    return text, None


def tag_catalogue(args: argparse.Namespace) -> int:
    """``genretag tag --engine ray``: 0 if every file was tagged, 1 if some failed."""
    check(args)
    folder, csv = outputs(args.out)
    entries = list_files(args.inputs)
    predictor = load(args.ckpt, torch.device("cpu"), args.ensemble, args.precision)
    table = choice.table(predictor, args, "csv")
    catalogue = Catalogue(folder, table)
    summary = choice.Summary()
    errors: list[tuple[str, str]] = []
    local = not is_uri(folder)
    lock = (
        exclusive(Path(folder).with_name(f".{Path(folder).name}.lock"), folder) if local else None
    )
    with lock or contextlib.nullcontext():
        done = catalogue.done()
        todo = [e for e in entries if done.get(e.path) != e.key]
        summary.known = len(entries) - len(todo)
        log.info("%d audio files: %d to tag", len(entries), len(todo))
        try:
            if todo:
                _pipeline(todo, predictor, table, args, catalogue, summary, errors)
        finally:
            write_errors(beside(folder, ".errors.csv"), errors)
        if csv:
            catalogue.write_csv(csv)
    log.log(logging.ERROR if summary.failed else logging.INFO, "%s",
            summary.line(Path(folder) if local else None))  # fmt: skip
    return 1 if summary.failed else 0


def _pipeline(todo: list[Entry], predictor, table, args, catalogue, summary, errors) -> None:
    """Run the Ray Data pipeline over ``todo``; finished blocks are written as parts."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'genretag[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, include_dashboard=False,
                 logging_level=logging.WARNING if args.quiet else logging.INFO)  # fmt: skip
    try:
        resources = ray.cluster_resources()
        sizing = plan(resources.get("CPU", 1.0), resources.get("GPU", 0.0), len(todo), args)
        log.info("%s", sizing)
        ray.data.DataContext.get_current().enable_progress_bars = not args.quiet
        if args.quiet:  # Ray Data's own lines about each execution
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        pending = _Pending(catalogue)
        try:
            for block in _dataset(ray, todo, predictor, table, args, sizing).iter_batches(
                batch_size=None, batch_format="numpy"
            ):
                _record(block, pending, summary, errors)
        finally:  # Ctrl-C or a failure: what is tagged is kept
            pending.flush()
    finally:
        if started:
            ray.shutdown()


def _dataset(ray, todo: list[Entry], predictor, table, args, sizing: Plan):
    hop_s = args.hop or predictor.window_seconds
    cut = Cut(predictor.sample_rate, predictor.window, max(1, round(hop_s * predictor.sample_rate)),
              predictor.pad_mode)  # fmt: skip
    scoring = Scoring(args.ensemble, args.precision, args.aggregate, args.batch_size,
                      sizing.threads, table)  # fmt: skip
    checkpoints = [(path, Path(path).read_bytes()) for path in args.ckpt]
    items = [{"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns} for e in todo]
    ds = ray.data.from_items(
        items, override_num_blocks=math.ceil(len(items) / sizing.files_per_block)
    )
    # memory= keeps decoding its own stage (Ray fuses stages whose resource requests match)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"cut": cut},
        batch_size=1,
        compute=ray.data.TaskPoolStrategy(size=sizing.decode_tasks),
        num_cpus=sizing.decode_cpus,
        memory=DECODE_MEMORY,
    )
    return ds.map_batches(
        Tagger,
        fn_constructor_args=(checkpoints, scoring),
        batch_size=FILES_PER_CALL,
        compute=ray.data.ActorPoolStrategy(size=sizing.actors),
        num_cpus=sizing.actor_cpus,
        num_gpus=sizing.actor_gpus,
    )


class _Pending:
    """Tagged rows not yet written: a part every ROWS_PER_PART rows or PART_SECONDS, and at the
    end (a driver killed outright loses at most these; the re-run tags them again)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.blocks: list[dict[str, np.ndarray]] = []
        self.rows, self.since = 0, time.monotonic()

    def add(self, rows: dict[str, np.ndarray]) -> None:
        self.blocks.append(rows)
        self.rows += len(rows["path"])
        if self.rows >= ROWS_PER_PART or time.monotonic() - self.since >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        blocks, self.blocks, self.rows, self.since = self.blocks, [], 0, time.monotonic()
        if blocks:
            self.catalogue.write({k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]})


def _record(block: dict[str, np.ndarray], pending: _Pending, summary, errors) -> None:
    """Log and list a block's failures; its tagged files go to the next part."""
    failed = block["error"] != ""
    for path, error in zip(block["path"][failed], block["error"][failed], strict=True):
        log.error("%s: %s", path, error)
        errors.append((str(path), str(error)))
    short = ~failed & (block["truncated"] != "")
    for path, note in zip(block["path"][short], block["truncated"][short], strict=True):
        log.warning("%s: %s", path, note)
        errors.append((str(path), str(note)))
    good = {name: column[~failed] for name, column in block.items()}
    pending.add(good)
    summary.failed += int(failed.sum())
    summary.truncated += int(short.sum())
    summary.tagged += int((~failed).sum())
    summary.seconds += float(good["duration"].sum())
