"""The file list of a catalogue run: local files, folders and globs, URIs, or lists of them.

Each input is one of

* a local file, folder (recursive) or glob: found by :func:`genretag.tagger.scan.scan`, so a
  file has the same path (and ``\\xNN`` escapes) as in ``tag``'s tables;
* a URI, ``s3://bucket/music/``, ``gs://...`` or ``file:///...``: a file, or every audio file
  under a prefix, listed through ``pyarrow.fs`` (credentials from the usual environment);
* a list: a ``.txt`` file with one path or URI a line (``#`` comments), or a ``.parquet``
  file with a ``path`` column.

A file's key is (size, mtime_ns), from ``os.stat`` or the object store's listing: the key
``tag`` records, so a resumed run skips a file only when it has not changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from genretag.errors import ConfigError
from genretag.io import Key, file_key
from genretag.tagger.scan import AUDIO_EXTENSIONS, display_path, scan

log = logging.getLogger(__name__)

LISTS = (".txt", ".parquet")


@dataclass(frozen=True)
class Entry:
    """One file to tag: ``path`` as the tables show it (a display path or a URI) and its key."""

    path: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> Key:
        return self.size, self.mtime_ns


def is_uri(text: str) -> bool:
    """True for ``scheme://...`` (``s3``, ``gs``, ``file``, ...), false for local paths."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1


def list_files(inputs: Sequence[str]) -> list[Entry]:
    """Every audio file under ``inputs``, each once (first reached first), with its key."""
    entries: list[Entry] = []
    for spec in _expand_lists(inputs):
        if is_uri(spec):
            entries += _uri_entries(spec)
        else:
            entries += [
                Entry(display_path(p), *file_key(p)) for p in scan([spec])
            ]  # one scan per input keeps the input order
    seen: set[str] = set()
    unique = [e for e in entries if not (e.path in seen or seen.add(e.path))]
    return unique


def _expand_lists(inputs: Sequence[str]) -> list[str]:
    """``inputs`` with each ``.txt``/``.parquet`` list replaced by the paths it holds."""
    out: list[str] = []
    for spec in inputs:
        suffix = PurePosixPath(spec).suffix.lower()
        if suffix not in LISTS or (not is_uri(spec) and not Path(spec).is_file()):
            out.append(spec)
        elif suffix == ".txt":
            text = _read_bytes(spec).decode("utf-8", "surrogateescape")
            out += [s for line in text.splitlines() if (s := line.strip()) and s[0] != "#"]
        else:
            out += _parquet_paths(spec)
    return out


def _read_bytes(spec: str) -> bytes:
    if not is_uri(spec):
        return Path(spec).read_bytes()
    fs, path = _filesystem(spec)
    with fs.open_input_stream(path) as handle:
        return handle.read()


def _parquet_paths(spec: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        if is_uri(spec):
            fs, path = _filesystem(spec)
            table = pq.read_table(path, columns=["path"], filesystem=fs)
        else:
            table = pq.read_table(spec, columns=["path"])
    except (KeyError, ValueError, OSError) as error:
        raise ConfigError(
            f"{spec}: a file list needs a 'path' column of paths or URIs ({error})"
        ) from None
    return [str(p) for p in table.column("path").to_pylist() if p]


def _filesystem(uri: str):  # -> (pyarrow.fs.FileSystem, str)
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:
        raise ConfigError(f"{uri}: cannot open this location through pyarrow ({error})") from None


def _uri_entries(uri: str) -> list[Entry]:
    """The file at ``uri``, or the audio files under it (recursive, hidden names skipped)."""
    from pyarrow import fs as pafs

    fs, root = _filesystem(uri)
    scheme = uri.partition("://")[0]
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"{uri}: no such file or prefix")
    if info.type == pafs.FileType.File:
        found = [info]
    else:
        found = [
            i
            for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
            if i.type == pafs.FileType.File
            and PurePosixPath(i.path).suffix.lower() in AUDIO_EXTENSIONS
            and not any(
                part.startswith(".") for part in PurePosixPath(i.path).relative_to(root).parts
            )
        ]
        found.sort(key=lambda i: i.path)
    return [Entry(f"{scheme}://{i.path}", int(i.size), int(i.mtime_ns or 0)) for i in found]
