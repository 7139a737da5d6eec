"""``genretag tag DIR ... --watch``: tag the library, then keep tagging what arrives in it.

watchdog (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) reports every
file created, written, closed or moved into the watched folders; each becomes a candidate. A
candidate is tagged once it is complete: its size and mtime have stayed the same for
``--settle`` seconds (a copy in progress keeps changing them). Settled files go through
:func:`genretag.tagger.command.tag_files` with the options of the first pass, into the same
``--out`` table, which is then finished as after any run (report, playlists, embeddings).

* Our own tag write renames a verified copy over the file, which watchdog reports as a new
  file. The table records each file's size and mtime *after* that write, so when the event
  settles the file is found done and nothing is tagged twice.
* A candidate deleted or renamed away before its turn is dropped without an error; a rename
  within the folders is a new candidate under its new name. A folder moved in is scanned.
* Hidden names (``.x``: our temporary copies, partial downloads) and non-audio files are ignored.
* SIGTERM and Ctrl-C (SIGINT) set a flag: a running pass stops after the files of its current
  batch are recorded, the wait stops at once, and the command returns.

The observer starts before the first pass, so files that arrive during it are not missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from genretag.errors import ConfigError
from genretag.io import Key, file_key
from genretag.tagger.scan import AUDIO_EXTENSIONS, scan

# tag_files(files, stop, new_only) -> exit code: genretag.tagger.command.tag_files, bound
TagFiles = Callable[[list[Path], Callable[[], bool], bool], int]

log = logging.getLogger(__name__)

TICK = 0.2  # seconds between looks at the candidates


class Candidates:
    """Paths reported by the watcher, each with the key it had when last seen changing.

    ``add`` is called from watchdog's thread, ``settled`` from the main one.
    """

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self._lock = threading.Lock()
        self._seen: dict[Path, tuple[Key, float]] = {}

    def add(self, path: Path) -> None:
        if _wanted(path):
            with self._lock:
                self._seen[path] = ((-2, -2), time.monotonic())  # a key no file has

    def add_folder(self, folder: Path) -> None:
        """A folder moved or created in: every audio file under it."""
        try:
            for path in scan([str(folder)]):
                self.add(path)
        except (OSError, ConfigError):  # gone again already
            pass

    def settled(self, now: float | None = None) -> list[Path]:
        """The paths whose size and mtime have not changed for ``settle`` seconds (taken out);
        paths that no longer exist are dropped."""
        now = time.monotonic() if now is None else now
        ready = []
        with self._lock:
            for path, (key, since) in list(self._seen.items()):
                current = file_key(path)
                if current == (-1, -1):
                    log.debug("%s: gone before its turn", path)
                    del self._seen[path]
                elif current != key:
                    self._seen[path] = (current, now)
                elif now - since >= self.settle:
                    ready.append(path)
                    del self._seen[path]
        return sorted(ready)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def _wanted(path: Path) -> bool:
    """An audio file name, not hidden (our temporary copies and partial downloads are)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _handler(candidates: Candidates):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if event.event_type in ("deleted", "opened", "closed_no_write"):
                return
            where = getattr(event, "dest_path", "") or event.src_path
            path = Path(os.fsdecode(where))
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    candidates.add_folder(path)
            else:
                candidates.add(path)

    return Handler()


def folders(inputs: list[str]) -> list[Path]:
    """The folders to watch: each input folder (recursively); files and globs cannot be."""
    found = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise ConfigError(f"--watch: {spec} is not a folder; watch folders, not files or globs")
        found.append(path)
    return found


@contextmanager
def stopping() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (the old handlers come back)."""
    stop = threading.Event()

    def handle(signum: int, frame) -> None:
        log.warning("%s: stopping after the files being tagged", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace, tag_files: TagFiles) -> int:
    """The first pass over ``args.inputs``, then tag what arrives until SIGTERM/SIGINT, each
    time through ``tag_files(files, stop, new_only)`` (the command's, with its options and
    model); returns 1 if any pass had failures, else 0."""
    try:
        from watchdog.observers import Observer
    except ImportError:
        raise ConfigError("--watch needs watchdog: pip install 'genretag[watch]'") from None

    roots = folders(args.inputs)
    candidates = Candidates(args.settle)
    observer = Observer()
    handler = _handler(candidates)
    for root in roots:
        observer.schedule(handler, str(root), recursive=True)
    observer.start()
    worst = 0
    try:
        with stopping() as stop:
            worst = tag_files(scan(args.inputs), stop.is_set, False)
            log.info("watching %s for new audio files (Ctrl-C to stop)", ", ".join(map(str, roots)))
            while not stop.wait(TICK):
                ready = candidates.settled()
                if ready:
                    code = tag_files(ready, stop.is_set, True)
                    worst = max(worst, code)
    finally:
        observer.stop()
        observer.join(timeout=5)
    log.info("stopped watching")
    return worst
