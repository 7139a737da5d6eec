"""``genretag tag``: score a music library with trained checkpoints, write tables, tag files.

    scan (tagger.scan) -> decode + windows on workers, batched inference (tagger.stream, through
    genretag.inference) -> per file: decide, write the genre tag (tagger.filetags), record the
    row (tagger.outputs)

A re-run with the same ``--out`` skips the files already there (same path, size and mtime).
More than one machine: ``--engine ray`` (genretag.cluster) tags a catalogue on Ray Data.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from genretag import errors, system
from genretag.errors import run_command
from genretag.inference import Predictor, load_predictor
from genretag.io import file_key
from genretag.tagger import choice, embeddings, filetags
from genretag.tagger.choice import Summary
from genretag.tagger.options import build_parser, check
from genretag.tagger.outputs import Outputs, Table
from genretag.tagger.scan import display_path, real_path, scan
from genretag.tagger.stream import TrackResult, infer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """How this run scores: ``tag``'s settings resolved once, from the command line, the
    checkpoint and the machine (genretag.system)."""

    device: torch.device
    workers: int
    batch_size: int
    window_seconds: float
    hop_seconds: float  # between window starts: --segments, --hop, or one window
    hop: int  # the same in samples

    @classmethod
    def of(cls, args: argparse.Namespace, predictor: Predictor, on: torch.device) -> Plan:
        hop_seconds = args.segments or args.hop or predictor.window_seconds
        return cls(
            device=on,
            workers=system.default_workers(on) if args.workers is None else args.workers,
            batch_size=args.batch_size or system.default_batch_size(on),
            window_seconds=predictor.window_seconds,
            hop_seconds=hop_seconds,
            hop=max(1, round(hop_seconds * predictor.sample_rate)),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``genretag tag ...``: returns 0 if every file was tagged, 1 if some failed, 2 on usage errors."""
    again = "run the same command again to continue"
    return run_command("tag", lambda args: _run(build_parser().parse_args(args)), argv, again)


def _run(args: argparse.Namespace) -> int:
    check(args)
    log.setLevel(logging.WARNING if args.quiet else logging.NOTSET)
    if args.engine == "ray":  # a catalogue on Ray Data: tables only (genretag.cluster)
        from genretag.cluster.run import tag_catalogue

        return tag_catalogue(args)
    ensemble, plan = _prepare(args)
    if args.watch:
        from genretag.tagger import watch

        return watch.run(args, partial(tag_files, args, ensemble, plan))
    return tag_files(args, ensemble, plan, scan(args.inputs))


def _prepare(args: argparse.Namespace) -> tuple[Predictor, Plan]:
    """Load the checkpoints and resolve how the run scores (:class:`Plan`)."""
    device = system.device(args.device)
    precision = system.precision(args.precision)
    ensemble = load_predictor(args.ckpt, device, args.ensemble, precision=precision)
    if errors.VERBOSE:  # what each model is: its card (data, metrics, version)
        for path, network in zip(args.ckpt, ensemble.networks, strict=True):
            print(f"{path}:\n{network.card}", file=sys.stderr)
    return ensemble, Plan.of(args, ensemble, device)


def tag_files(
    args: argparse.Namespace,
    ensemble: Predictor,
    plan: Plan,
    files: list[Path],
    stop: Callable[[], bool] | None = None,
    new_only: bool = False,
) -> int:
    """Tag ``files`` into --out, then finish it (--report, --playlists);
    returns the exit code. ``stop()`` true ends the run between files (what is done is kept);
    ``new_only``: when every file is already in --out, do nothing and say nothing (--watch)."""
    summary = Summary(dry_run=args.dry_run)
    outputs, todo = _resume(args, ensemble, files, summary, new_only)
    if new_only and not todo:
        return 0
    log.info("%d audio files: %d to tag", len(files), len(todo))
    try:
        if outputs and args.write_tags and summary.known:
            known = set(map(display_path, files)) - set(map(display_path, todo))
            _retag_known(outputs, known, args, summary)
        with system.inference_threads(plan.device, plan.workers):
            _tag(todo, ensemble, plan, args, outputs, summary, stop)
    finally:
        if outputs:
            outputs.close()
    if outputs:
        outputs.finish()
        _finish_extras(args)
    log.log(logging.ERROR if summary.failed else logging.INFO, "%s", summary.line(args.out))
    return 1 if summary.failed else 0


def _finish_extras(args: argparse.Namespace) -> None:
    """--report and --playlists, from the whole --out table (earlier runs' files too)."""
    if args.report:
        from genretag import report

        report.write_report(args.out, args.report)
        log.info("wrote the report %s", args.report)
    if args.playlists:
        from genretag import playlists, report

        files, _ = report.readchoice.table(args.out)
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
    summary: Summary,
    new_only: bool = False,
) -> tuple[Outputs | None, list[Path]]:
    """Open the outputs of --out; returns them and the files not yet there (same size, mtime).
    ``new_only``: the outputs are not opened when every file is there."""
    if not args.out:
        return None, mine
    fmt = "jsonl" if args.out.suffix.lower() == ".jsonl" else "csv"
    table = choice.table(ensemble, args, fmt)
    srt = ensemble.task == "multiclass"
    outputs = Outputs(args.out, table, args.segments is not None, srt, args.embeddings)
    done = outputs.done()
    todo = [p for p in mine if done.get(display_path(p)) != file_key(p)]
    summary.known = len(mine) - len(todo)
    if todo or not new_only:
        outputs.open()
    return outputs, todo


def _tag(
    todo: list[Path],
    ensemble: Predictor,
    plan: Plan,
    args: argparse.Namespace,
    outputs: Outputs | None,
    summary: Summary,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Infer ``todo``, write tags and rows as files finish, with a progress bar; ends after a
    batch's files are recorded once ``stop()`` is true."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    table = outputs.table if outputs else choice.table(ensemble, args, "csv")
    bar = tqdm(
        total=len(todo),
        unit="file",
        disable=args.quiet or not todo,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    timeline, features = args.segments is not None, bool(args.embeddings)
    batches = infer(
        todo, ensemble, plan.hop, plan.batch_size, plan.workers, args.aggregate, timeline, features
    )
    with bar, logging_redirect_tqdm() if not bar.disable else contextlib.nullcontext():
        for results in batches:
            rows, timelines, vectors = [], [], []
            for result in results:
                row, line = _one_file(result, table, plan, args, outputs, summary)
                rows += row
                timelines += line
                if row and result.embedding is not None:
                    key = file_key(result.path)
                    vectors.append(
                        embeddings.line(display_path(result.path), key, result.embedding)
                    )
            if outputs:
                outputs.add(rows, timelines, vectors)
            if results:
                bar.update(len(results))
                speed = summary.seconds / max(time.monotonic() - summary.start, 1e-9)
                bar.set_postfix_str(f"audio {speed / 3600:.3f} h/s = {speed:.0f}x", refresh=False)
            if stop is not None and stop():
                break


def _one_file(
    result: TrackResult,
    table: Table,
    plan: Plan,
    args: argparse.Namespace,
    outputs: Outputs | None,
    summary: Summary,
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
    line = outputs.timeline(
        shown,
        key,
        result.timeline,
        result.starts,
        result.duration,
        plan.hop_seconds,
        plan.window_seconds,
    )
    return [row], [line]


def _write_tags(
    path: Path,
    genres: list[str],
    args: argparse.Namespace,
    outputs: Outputs | None,
    summary: Summary,
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
    outputs: Outputs, known: set[str], args: argparse.Namespace, summary: Summary
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
