"""Find the audio files of a library, each once, under the path the user reached it by.

Inputs are files, folders (walked recursively in name order, symlinked folders followed but no
folder entered twice) and globs. Hidden names (``.*``) and non-audio extensions are skipped. A
file reached twice (through a symlink and directly, or by two inputs) is listed once, under
the first path that reached it: ``Music/Jazz -> /mnt/b/jazz`` keeps ``Music/Jazz/x.mp3``.

Output tables must stay readable by pandas (UTF-8), and old libraries have file names that are
not valid UTF-8 (Latin-1). :func:`display_path` writes such a name's undecodable bytes as
``\\xNN`` escapes; :func:`real_path` turns the table's text back into the file's path.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from genretag.errors import ConfigError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    ".mp3 .flac .ogg .oga .opus .m4a .m4b .aac .wav .wave .aif .aiff .aifc .wma".split()
)
_ESCAPE = re.compile(r"\\x([89a-f][0-9a-f])")  # backslashreplace escapes bytes >= 0x80 only


def scan(inputs: Sequence[str]) -> list[Path]:
    """Audio files under ``inputs`` (files, folders, globs), each once, in input order."""
    found: dict[tuple[int, int], Path] = {}
    seen_dirs: set[tuple[int, int]] = set()
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.exists():
            candidates = [path]
        elif any(c in spec for c in "*?["):
            candidates = [
                Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))
            ]
            if not candidates:
                log.warning("%s: the pattern matches nothing", spec)
        else:
            raise ConfigError(f"{spec}: no such file or folder")
        for candidate in candidates:
            files = _walk(candidate, seen_dirs) if candidate.is_dir() else [candidate]
            for file in files:
                if _is_audio(file, explicit=file == path):
                    st = file.stat()
                    found.setdefault((st.st_dev, st.st_ino), file)
    return list(found.values())


def _walk(top: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[Path]:
    st = top.stat()
    if (st.st_dev, st.st_ino) in seen_dirs:
        return
    seen_dirs.add((st.st_dev, st.st_ino))
    for root, dirs, files in os.walk(top, followlinks=True):
        kept = []
        for name in sorted(dirs):
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            if not name.startswith(".") and (st.st_dev, st.st_ino) not in seen_dirs:
                seen_dirs.add((st.st_dev, st.st_ino))
                kept.append(name)
        dirs[:] = kept
        yield from (Path(root, name) for name in sorted(files) if not name.startswith("."))


def _is_audio(path: Path, explicit: bool) -> bool:
    if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
        if explicit:
            log.warning(
                "%s: skipped, not an audio file name (%s)",
                display_path(path),
                ", ".join(sorted(AUDIO_EXTENSIONS)),
            )
        return False
    if "\n" in str(path) or "\r" in str(path):
        log.warning(
            "%r: skipped, a line break in the file name cannot go into the output", str(path)
        )
        return False
    return True


def display_path(path: str | os.PathLike) -> str:
    """The path as valid UTF-8 text: bytes that are not UTF-8 become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def real_path(text: str) -> Path:
    """The file path of a :func:`display_path` text (``\\xNN`` escapes back to their bytes)."""
    if "\\x" not in text:
        return Path(text)
    # the surrogateescape form of each byte: what os.fsdecode gives for it
    return Path(_ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text))
