"""`genretag tag` killed at seeded random points, and on a full disk.

tests/test_tagging.py kills one run at a timed moment; here every write the command makes (row
appends, the final compaction, tag-file copies, saves and renames) is a numbered event, and a
seeded generator picks where a run dies: before an event, half-way through it (half the bytes
written), or right after it. The killed run is a forked child that SIGKILLs itself there (a fork
starts in milliseconds: the imports are already done); the re-run is the plain command.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from genretag import cli
from genretag.tagger import captions, filetags, outputs
from tests.test_tagging import (
    LABELS,
    make_library,
    make_tagged,
    native,
    other_tags,
    read_genres,
    save_checkpoint,
)

SEED = 20261122
HOW = ("before", "torn", "after")


@dataclass(frozen=True)
class Crash:
    """Die at write event number ``at`` (1-based; 0: never) ``how``: before, torn or after it."""

    at: int
    how: str = "before"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _encoded(lines: Any) -> bytes:
    return "".join(lines).encode("utf-8", "surrogateescape")


def _torn_append(appender: Any, lines: Any) -> None:  # half a batch of rows, then the kill
    data = _encoded(lines)
    appender.handle.write(data[: len(data) // 2])
    appender.handle.flush()


def _torn_atomic_write(path: Path, text: Any) -> None:  # half the temporary file
    data = _encoded(text)
    path.with_name(f".{path.name}.{os.getpid()}.tmp").write_bytes(data[: len(data) // 2])


def _torn_copy(source: Any, target: Any, **kwargs: Any) -> None:  # half the copy of a tagged file
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[: len(data) // 2])


def _install(crash: Crash, counted: list[int]) -> None:
    """Number the writes of genretag.tagger; at ``crash.at``, die (in this process only)."""
    targets: list[tuple[Any, str, Callable[..., None] | None]] = [
        (outputs._Appender, "write", _torn_append),  # rows, errors, timelines
        (outputs, "atomic_write", _torn_atomic_write),  # compaction, errors
        (captions, "atomic_write", _torn_atomic_write),  # SRT
        (filetags.shutil, "copy2", _torn_copy),  # the copy a tag is written into
        (filetags, "_save", None),  # mutagen saving the copy
        (filetags.os, "replace", None),  # renames: the tagged copy, atomic writes
    ]
    for owner, name, torn in targets:
        original = getattr(owner, name)

        def hooked(*args: Any, _original: Any = original, _torn: Any = torn, **kwargs: Any) -> Any:
            counted[0] += 1
            if counted[0] != crash.at:
                return _original(*args, **kwargs)
            if crash.how == "torn" and _torn is not None:
                _torn(*args, **kwargs)
            elif crash.how == "after":
                _original(*args, **kwargs)
            _die()

        setattr(owner, name, hooked)


def in_child(crash: Crash, args: list[str], log: Path, limit: int | None = None) -> tuple[int, int]:
    """``genretag ARGS`` in a forked child that dies at ``crash``: (exit status, writes counted).

    The status is negative for a signal (-9: the kill landed). ``limit``: RLIMIT_FSIZE bytes for
    the child (SIGXFSZ stays ignored, as Python sets it: a write past it fails with EFBIG).
    """
    count_file = log.with_suffix(".count")
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # not pytest's capture
            # One thread, and OMP_NUM_THREADS so that tagging keeps it: a forked child must
            # not start OpenMP threads (the parent's pool does not survive a fork: it hangs).
            os.environ["OMP_NUM_THREADS"] = "1"
            torch.set_num_threads(1)
            counted = [0]
            _install(crash, counted)
            if limit is not None:  # a full disk, for the files this process writes
                # multiprocessing's shared-memory arena (ftruncate in /dev/shm) is made first:
                # the limit is for the whole process, a full disk leaves /dev/shm alone
                torch.multiprocessing.Value("q", 0)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            code = cli.main(args)
            count_file.write_text(str(counted[0]))
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"genretag {' '.join(args)} hung at {crash}; see {log}")
        time.sleep(0.01)
    counted = int(count_file.read_text()) if count_file.exists() else -1
    count_file.unlink(missing_ok=True)
    return os.waitstatus_to_exitcode(done[1]), counted


def whole_rows(out: Path) -> dict[str, str]:
    """{path: line} of the whole data lines of a CSV table (a torn last line is not a row)."""
    lines = out.read_bytes().decode().splitlines(keepends=True)[1:] if out.exists() else []
    rows: dict[str, str] = {}
    for line in lines:
        if line.endswith("\n"):
            path = line.split(",", 1)[0]
            assert path not in rows, f"{path} twice in {out}"
            rows[path] = line
    return rows


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", LABELS)


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(events: int, count: int, seed: int) -> list[Crash]:
    """``count`` kill points drawn from ``events`` writes, each way of dying in turn."""
    rng = random.Random(seed)
    return [Crash(rng.randint(1, events), HOW[i % len(HOW)]) for i in range(count)]


def every(events: int) -> list[Crash]:
    return [Crash(at, how) for at in range(1, events + 1) for how in HOW]


def kill_tagging_then_rerun(
    tmp_path: Path, ckpt: Path, choose: Callable[[int], list[Crash]]
) -> None:
    """Tag a library into a fresh --out, killed at each chosen write; re-run each to the end."""
    library = make_library(tmp_path)
    good, bad = sorted(map(str, library.good)), sorted(map(str, library.bad))

    def args(out: Path) -> list[str]:
        return ["tag", str(library.root), "--ckpt", str(ckpt), "--out", str(out)] + [
            "--batch-size", "1", "--workers", "0", "--quiet"]  # fmt: skip

    reference = tmp_path / "reference" / "tags.csv"
    code, events = in_child(Crash(0), args(reference), tmp_path / "reference.log")
    assert code == 1 and events > 10  # 1: the bad files
    expected = whole_rows(reference)
    assert sorted(expected) == good

    for number, crash in enumerate(choose(events)):
        out = tmp_path / f"run{number}" / "tags.csv"
        code, _ = in_child(crash, args(out), tmp_path / f"run{number}.log")
        assert code == -signal.SIGKILL, crash
        rows = whole_rows(out)  # what a reader sees after the kill: finished files, right rows
        assert set(rows) <= set(good) and all(rows[p] == expected[p] for p in rows), crash

        code = cli.main(args(out))  # the same command again
        assert code == 1, crash
        rows = whole_rows(out)
        assert sorted(rows) == good, crash  # exactly one row per good file ...
        assert rows == expected, crash  # ... the same as an uninterrupted run's
        errors = pd.read_csv(out.with_name("tags.errors.csv"))
        assert sorted(errors.path) == bad, crash
        assert sorted(p.name for p in out.parent.iterdir()) == ["tags.csv", "tags.errors.csv"]


def kill_tag_writes_then_rerun(
    tmp_path: Path, ckpt: Path, choose: Callable[[int], list[Crash]]
) -> None:
    """--write-tags on fresh copies of a tagged library, killed at each chosen write, re-run."""

    def args(folder: Path) -> list[str]:
        return ["tag", str(folder), "--ckpt", str(ckpt), "--write-tags", "--mode", "merge"] + [
            "--top-k", "2", "--batch-size", "1", "--workers", "0", "--quiet"]  # fmt: skip

    reference = make_tagged(tmp_path / "reference")
    code, events = in_child(Crash(0), args(tmp_path / "reference"), tmp_path / "reference.log")
    assert code == 0
    new = {p.name: (read_genres(p), other_tags(p)) for p in reference}

    for number, crash in enumerate(choose(events)):
        folder = tmp_path / f"lib{number}"
        paths = make_tagged(folder)
        old = {p.name: (read_genres(p), other_tags(p)) for p in paths}
        samples = {p.name: native(p) for p in paths}
        code, _ = in_child(crash, args(folder), tmp_path / f"lib{number}.log")
        assert code == -signal.SIGKILL, crash
        for path in paths:  # each file: all old tags or all new, and the same audio
            assert (read_genres(path), other_tags(path)) in (old[path.name], new[path.name])
            assert np.array_equal(native(path), samples[path.name]), (path.name, crash)

        assert cli.main(args(folder)) == 0
        for path in paths:
            assert (read_genres(path), other_tags(path)) == new[path.name], crash
            assert np.array_equal(native(path), samples[path.name])
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths), (
            f"a temporary copy was left in the library ({crash})"
        )


@pytest.mark.usefixtures("one_thread")
def test_killed_at_seeded_random_writes_each_rerun_has_one_row_per_good_file(
    tmp_path: Path, ckpt: Path
) -> None:
    kill_tagging_then_rerun(tmp_path, ckpt, lambda events: seeded(events, 6, SEED))


@pytest.mark.usefixtures("one_thread")
def test_killed_while_writing_tags_every_file_is_old_or_new_and_decodes_the_same(
    tmp_path: Path, ckpt: Path
) -> None:
    kill_tag_writes_then_rerun(tmp_path, ckpt, lambda events: seeded(events, 4, SEED + 1))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_killed_at_every_write_and_every_way(tmp_path: Path, ckpt: Path) -> None:
    kill_tagging_then_rerun(tmp_path / "rows", ckpt, every)
    kill_tag_writes_then_rerun(tmp_path / "tags", ckpt, every)


@pytest.mark.usefixtures("one_thread")
def test_full_disk_is_one_clear_error_and_the_rows_before_stay(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = make_library(tmp_path)
    out = tmp_path / "out" / "tags.csv"
    args = ["tag", str(library.root), "--ckpt", str(ckpt), "--out", str(out)]
    args += ["--batch-size", "1", "--workers", "0", "--quiet"]
    assert cli.main(args) == 1
    expected = whole_rows(out)
    shutil.rmtree(out.parent)

    header = outputs.Table(LABELS, 3, 0.0, "csv").header
    rows_bytes = sum(len(line.encode()) for line in expected.values())
    log = tmp_path / "full.log"  # the disk fills half-way through the rows
    code, _ = in_child(Crash(0), args, log, limit=len(header.encode()) + rows_bytes // 2)
    assert code == 1
    [line] = [line for line in log.read_text().splitlines() if line.startswith("genretag")]
    assert line == (
        f"genretag tag: error: could not write {out} (File too large); the lines before are kept, "
        f"run the same command again when there is room"
    )
    assert "Traceback" not in log.read_text()
    rows = whole_rows(out)  # intact, as written (the cut last line is not a row)
    assert 0 < len(rows) < len(expected) and all(rows[p] == expected[p] for p in rows)

    assert cli.main(args) == 1  # room again: the same command finishes the library
    assert whole_rows(out) == expected
    capsys.readouterr()
