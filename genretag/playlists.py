"""One ``.m3u8`` playlist per genre, as Navidrome, Jellyfin, mpd and most players read them.

Each playlist is UTF-8 extended M3U::

    #EXTM3U
    #PLAYLIST:Old-Time / Historic
    #EXTINF:187,Artist - Title
    ../Music/Artist/Album/01 Title.mp3

* Entries are paths relative to the playlist's own folder (``os.path.relpath``, forward
  slashes), so the library and its playlists can move together, or be mounted elsewhere (a
  Docker volume) as long as both move. Where no relative path exists (another Windows drive)
  the absolute path is written.
* ``#EXTINF`` gives the duration in whole seconds and "artist - title" from the file's tags
  (mutagen), or the file's stem when it has no such tags; -1 when the length is unknown.
* A path whose name is not valid UTF-8 (kept through ``surrogateescape``) is written as its
  original bytes, so the entry still names the real file.
* File names: the genre name with each character that some file system forbids
  (``/ \\ : * ? " < > |`` and control characters) replaced by ``-``, runs of spaces collapsed,
  leading/trailing dots and spaces removed, Windows device names (CON, NUL, COM1, ...) given a
  trailing ``_``, cut to 120 characters: "Old-Time / Historic" -> ``Old-Time - Historic.m3u8``.
  Two genres that end up with the same name (ignoring case, for case-insensitive file systems)
  get `` (2)``, `` (3)``... in the order they first appear. ``#PLAYLIST:`` keeps the real name.
* Each playlist is written to a temporary file beside it and renamed over the old one, so a
  player never reads half a playlist. Playlists of genres absent from ``rows`` are left alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from genretag.io import atomic_write

log = logging.getLogger(__name__)

SUFFIX = ".m3u8"
_UNSAFE = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10))}
_RESERVED |= {f"LPT{i}" for i in range(1, 10)}
MAX_NAME = 120


def safe_name(genre: str) -> str:
    """A file name (without suffix) for ``genre`` that every common file system accepts."""
    name = re.sub(r"\s+", " ", _UNSAFE.sub("-", genre)).strip(" .")[:MAX_NAME].strip(" .")
    if not name:
        return "_"
    return name + "_" if name.split(".")[0].upper() in _RESERVED else name


def write_playlists(
    rows: Iterable[tuple[Path, list[str]]], folder: Path, *, read_tags: bool = True
) -> dict[str, Path]:
    """Write ``<folder>/<genre>.m3u8`` for every genre in ``rows``; returns ``{genre: playlist}``.

    ``rows``: (audio file, its genres) per file, in playlist order; a file listed twice under a
    genre appears once. ``read_tags=False`` skips opening the files for ``#EXTINF`` details.
    """
    folder = Path(os.path.abspath(folder))
    members: dict[str, list[Path]] = {}
    seen: dict[str, set[str]] = {}
    for path, genres in rows:
        path = Path(os.path.abspath(path))
        for genre in genres:
            if str(path) not in seen.setdefault(genre, set()):
                seen[genre].add(str(path))
                members.setdefault(genre, []).append(path)
    folder.mkdir(parents=True, exist_ok=True)
    targets = _file_names(list(members))
    details: dict[Path, str] = {}
    for genre, paths in members.items():
        lines = ["#EXTM3U", f"#PLAYLIST:{_one_line(genre)}"]
        for path in paths:
            if path not in details:
                details[path] = _extinf(path) if read_tags else f"-1,{_one_line(path.stem)}"
            lines += [f"#EXTINF:{details[path]}", _entry(path, folder)]
        atomic_write(folder / targets[genre], "\n".join(lines) + "\n")
    log.info("wrote %d playlists in %s", len(members), folder)
    return {genre: folder / targets[genre] for genre in members}


def _file_names(genres: list[str]) -> dict[str, str]:
    taken: set[str] = set()
    names: dict[str, str] = {}
    for genre in genres:
        base = safe_name(genre)
        name, n = base, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base} ({n})"
        taken.add(name.casefold())
        names[genre] = name + SUFFIX
    return names


def _entry(path: Path, folder: Path) -> str:
    try:
        rel = os.path.relpath(path, folder)
    except ValueError:  # no relative path (another drive): the absolute one
        rel = str(path)
    return rel.replace(os.sep, "/")


def _one_line(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", text).strip()


def _extinf(path: Path) -> str:
    """``"<seconds>,<artist - title>"`` from the file's tags; the stem when it has none."""
    import mutagen

    seconds, title = -1, path.stem
    try:
        audio = mutagen.File(path, easy=True)
    except Exception as error:  # a damaged or unreadable file still gets its entry
        log.debug("%s: no tags for #EXTINF (%s)", path, error)
        audio = None
    if audio is not None:
        length = getattr(audio.info, "length", 0) or 0
        seconds = round(length) if length > 0 else -1
        tags = audio.tags or {}
        artist, name = _first(tags, "artist"), _first(tags, "title")
        if name:
            title = f"{artist} - {name}" if artist else name
    return f"{seconds},{_one_line(title)}"


def _first(tags, key: str) -> str:
    try:
        values = tags.get(key) or []
    except Exception:  # easy tag readers raise on odd frames
        return ""
    return str(values[0]).strip() if values else ""
