"""``genretag tag DIR --watch``: files copied in slowly, renamed in or deleted early are each
tagged exactly once, after they are complete; our own tag writes never trigger a second
tagging; SIGTERM stops the watcher within a couple of seconds."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from genretag.io import file_key
from tests.test_tagging import LABELS, REPO, read_genres, save_checkpoint, write_audio

pytest.importorskip("watchdog")
SETTLE = 1.0


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the watcher ended early waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def rows(out: Path) -> pd.DataFrame:
    if not out.exists() or out.stat().st_size == 0:
        return pd.DataFrame({"path": []})
    return pd.read_csv(out)


class Lines:
    """A subprocess's stderr lines, each with the time it arrived, read on a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line))

    def first(self, text: str) -> float | None:
        return next((t for t, line in self.lines if text in line), None)

    def text(self) -> str:
        self.thread.join(timeout=10)
        return "".join(line for _, line in self.lines)


def slow_copy(source: Path, target: Path, chunks: int = 4, pause: float = 0.45) -> None:
    """Copy in chunks with pauses shorter than the settle time, as a slow disk or network does."""
    data = source.read_bytes()
    step = len(data) // chunks + 1
    with open(target, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            os.fsync(handle.fileno())
            time.sleep(pause)


def test_watch_tags_each_arrival_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", LABELS)
    library, elsewhere, out = tmp_path / "Music", tmp_path / "incoming", tmp_path / "tags.csv"
    for name, freq in [("first.flac", 220.0), ("slow.flac", 440.0), ("moved.flac", 880.0)]:
        write_audio((library if name == "first.flac" else elsewhere) / name, 2.0, 44_100, 1, freq)
    write_audio(elsewhere / "brief.wav", 1.0, 16_000)
    cmd = [sys.executable, "-m", "genretag", "tag", str(library), "--ckpt", str(ckpt)]
    cmd += ["--out", str(out), "--write-tags", "--watch", "--settle", str(SETTLE)]
    cmd += ["--workers", "0", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    lines = Lines(proc.stderr)
    try:
        wait_for(lambda: len(rows(out)) == 1, 60, "the first pass", proc)
        time.sleep(0.5)  # the observer runs from before the first pass: arrivals are seen
        slow_copy(elsewhere / "slow.flac", library / "slow.flac")
        # a partial download under a hidden name, renamed when complete
        shutil.copy(elsewhere / "moved.flac", library / ".moved.flac.part")
        os.rename(library / ".moved.flac.part", library / "moved.flac")
        # a file deleted before its turn is no error
        shutil.copy(elsewhere / "brief.wav", library / "brief.wav")
        time.sleep(0.2)
        (library / "brief.wav").unlink()
        wait_for(lambda: len(rows(out)) == 3, 30, "the new files", proc)
        time.sleep(SETTLE + 1.5)  # time for our own tag writes to come back as events
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = proc.wait(timeout=20)
        stderr = lines.text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, stderr
    stopped = (lines.first("stopped watching") or float("inf")) - start
    assert stopped < 2.0, f"SIGTERM took {stopped:.1f} s"  # the interpreter's exit comes after
    table = rows(out).set_index("path")
    names = ["first.flac", "slow.flac", "moved.flac"]
    assert sorted(table.index) == sorted(str(library / n) for n in names)
    tagged = [int(n) for n in re.findall(r"tagged (\d+) files", stderr)]
    assert sum(tagged) == 3, stderr  # each once: no half copy, no echo of our own writes
    assert table.loc[str(library / "slow.flac"), "duration"] == pytest.approx(2.0)  # all of it
    for name in names:
        path = library / name
        assert read_genres(path), name  # the genre was written
        assert tuple(table.loc[str(path), ["size", "mtime_ns"]]) == file_key(path)
    assert not (tmp_path / "tags.errors.csv").exists()


def test_watch_needs_out_and_folders(tmp_path: Path) -> None:
    from genretag.tagger.command import main

    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", LABELS)
    write_audio(tmp_path / "a.wav", 0.5, 16_000)
    assert main([str(tmp_path), "--ckpt", str(ckpt), "--write-tags", "--watch"]) == 2
    args = [str(tmp_path / "a.wav"), "--ckpt", str(ckpt), "--out", str(tmp_path / "t.csv")]
    assert main([*args, "--watch"]) == 2  # a file cannot be watched
