"""The one way to write a file safely, the one file identity, the one lock.

* :func:`atomic_write`: write through a callback into a hidden temporary file beside the target,
  flush and fsync it, rename it over the target, fsync the folder. A reader sees the old file or
  the new one, never a part; a kill leaves at most the temporary file (removed by the next write
  of the same target); a failure (a full disk) removes it and raises OSError naming the target.
* :func:`file_key`: (size, mtime_ns), how tagging and the decoded-audio cache tell that a file
  changed.
* :func:`exclusive`: an advisory lock (the ``filelock`` package) that a second run either waits
  for or is refused with one line; the kernel drops it when the process dies.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout

from genretag.errors import ConfigError

Key = tuple[int, int]  # (size in bytes, mtime in ns)


def file_key(path: str | os.PathLike) -> Key:
    """(size, mtime_ns) of ``path``; (-1, -1) when it cannot be read (it matches no record)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` survive a power cut (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    target: str | os.PathLike,
    write: Callable[[BinaryIO], object] | bytes | str,
    what: str = "",
    clean_stale: bool = True,
) -> None:
    """Replace ``target`` with what ``write(file)`` writes (or the given bytes/text, UTF-8).

    ``what`` names the file in an error ("the checkpoint "): could not write {what}{target}.
    The temporary file has a unique name, so concurrent writers of one target never collide
    (the last rename wins); ``clean_stale`` first removes temporary files a killed write left
    (turn it off where several processes write one target at once: the decoded-audio cache).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:  # one writer per target: what a killed write left can go
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(write):
                write(handle)
            else:
                data = write.encode("utf-8", "surrogateescape") if isinstance(write, str) else write
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as error:
        temp.unlink(missing_ok=True)
        kept = "the previous one is intact" if target.exists() else "no earlier one exists"
        raise OSError(
            error.errno, f"could not write {what}{target} ({error.strerror}); {kept}"
        ) from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)


@contextmanager
def exclusive(lock_file: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock ``lock_file`` while the block runs.

    With ``wait`` a second process waits its turn (one synthesizes the demo corpus, the others
    then find it); without, it is refused at once with ConfigError naming ``what``, and the
    lock file is removed afterwards (output folders stay clean).
    """
    Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"{what}: another genretag run is writing it") from None
    try:
        yield
    finally:
        if not wait:  # no one waits on this file, so it can go (a waiter could lock a stale one)
            Path(lock_file).unlink(missing_ok=True)
        lock.release()
