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
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from genretag import errors, vocabulary
from genretag.errors import ConfigError, run_command
from genretag.inference import Predictor, load_predictor
from genretag.io import file_key
from genretag.system import available_cores
from genretag.tagger import filetags, options
from genretag.tagger.options import build_parser, check, cpu_threads, ranks
from genretag.tagger.outputs import Outputs, Table, sibling
from genretag.tagger.scan import display_path, real_path, scan
from genretag.tagger.stream import TrackResult, infer

log = logging.getLogger(__name__)


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
    again = "run the same command again to continue"
    return run_command("tag", lambda args: _run(build_parser().parse_args(args)), argv, again)


def _run(args: argparse.Namespace) -> int:
    check(args)
    log.setLevel(logging.WARNING if args.quiet else logging.NOTSET)
    device = options.device(args.device)
    ensemble = load_predictor(args.ckpt, device, args.ensemble, precision=args.precision)
    if errors.VERBOSE:  # what each model is: its card (data, metrics, version)
        for path, model in zip(args.ckpt, ensemble.models, strict=True):
            print(f"{path}:\n{getattr(model, 'card', '')}", file=sys.stderr)
    if args.workers is None:
        args.workers = (
            min(16, available_cores() - 1)
            if device.type == "cuda"
            else max(1, available_cores() // 4)
        )
    rank, world = ranks()
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
        _finish_extras(args)
    if world > 1:
        dist.destroy_process_group()
    log.log(logging.ERROR if summary.failed else logging.INFO, "%s", summary.line(args.out))
    if failed > summary.failed:
        listed = sibling(args.out, ".errors.csv")
        log.error("%d files failed on other ranks (see %s)", failed - summary.failed, listed)
    return 1 if failed or summary.failed else 0


def _table(predictor: Predictor, args: argparse.Namespace, fmt: str) -> Table:
    """The output table, with the genre choice of --genre-map/--with-parents/--max/--min."""
    labels = predictor.labels
    genre_map = vocabulary.GenreMap.load(args.genre_map, labels) if args.genre_map else None
    if genre_map is None and predictor.genre_map:  # the checkpoint's own (published models)
        genre_map = vocabulary.GenreMap.from_data(
            predictor.genre_map, labels, "the checkpoint's genre_map"
        )
    parents = predictor.genre_tree if args.with_parents else None
    if args.with_parents and not parents:
        log.warning("--with-parents: the checkpoint has no genre tree (trained before it kept one)")
    floor: float | dict[str, float] = 0.0 if args.threshold == "auto" else args.threshold
    if args.threshold == "auto":
        if predictor.task != "multilabel":
            raise ConfigError("--threshold auto: per-genre thresholds exist for genre models only")
        floor = dict(zip(labels, predictor.thresholds.tolist(), strict=True))
    choose = partial(
        vocabulary.choose,
        labels=labels,
        max_genres=args.max_genres or args.top_k,
        min_score=floor if args.min_score is None else args.min_score,
        genre_map=genre_map,
        parents=parents,
    )
    top_floor = 0.0 if args.threshold == "auto" else args.threshold
    return Table(labels, args.top_k, top_floor, fmt, choose)


def _finish_extras(args: argparse.Namespace) -> None:
    """--report and --playlists, from the whole --out table (earlier runs' files too)."""
    if args.report:
        from genretag import report

        report.write_report(args.out, args.report)
        log.info("wrote the report %s", args.report)
    if args.playlists:
        from genretag import playlists, report

        files, _ = report.read_table(args.out)
        rows = [
            (real_path(p), genres or [])
            for p, genres in zip(files["path"], files["genres"], strict=True)
        ]
        written = playlists.write_playlists(rows, args.playlists)
        log.info("wrote %d playlists to %s", len(written), args.playlists)


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
    table = _table(ensemble, args, fmt)
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

    table = outputs.table if outputs else _table(ensemble, args, "csv")
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
    genres = [name for name, _ in table.choose(result.scores)]
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
        genres = [name for name, _ in outputs.table.choose(outputs.table.scores(row))]
        before = file_key(real_path(path))
        _write_tags(real_path(path), genres, args, outputs, summary)
        after = file_key(real_path(path))
        if after != before:
            rekeyed.append(outputs.table.rekey(row, after))
    outputs.add(rekeyed, [])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
