"""Genres inside audio files: plan the change, then write it through a verified copy.

One genre field per container, multi-valued where allowed:

* MP3, WAV, AIFF: the ID3v2 ``TCON`` frame (several values, null-separated; the file's ID3
  version is kept, so no other frame is converted);
* FLAC, Ogg Vorbis, Opus, Ogg FLAC, Speex: one Vorbis comment ``GENRE`` per value;
* M4A/MP4: ``©gen`` (several values); a numeric ``gnre`` atom is read as a genre and replaced.

A tag write never touches the original until it is proven good: the file is copied to a hidden
temporary file beside it, mutagen updates the copy, the copy is checked (the genres read back,
every other tag is equal, the audio decodes to the same samples through genretag.data.audio),
flushed to disk, and only then renamed over the original. Any failure leaves the original as it
was and raises :class:`TagWriteError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mutagen
from mutagen.aiff import AIFF
from mutagen.flac import FLAC
from mutagen.id3 import TCON, ID3FileType
from mutagen.mp4 import MP4
from mutagen.ogg import OggFileType
from mutagen.wave import WAVE

from genretag.data import audio
from genretag.io import fsync_folder

log = logging.getLogger(__name__)

Mode = Literal["skip", "overwrite", "merge"]
MODES: tuple[Mode, ...] = ("skip", "overwrite", "merge")
TEMP_MARK = ".genretag-tmp"
_MP4_GENRE, _MP4_GENRE_ID = "\xa9gen", "gnre"


class TagWriteError(Exception):
    """A genre could not be written; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class GenreChange:
    """The genre values of one file before and after (equal when nothing is to be written)."""

    path: Path
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        """One line for --dry-run and logs: ``path: [old] -> [new]``."""
        return f"{self.path}: {_show(self.before)} -> {_show(self.after)}"


def _show(genres: tuple[str, ...]) -> str:
    return "; ".join(genres) if genres else "(none)"


def _open(path: Path) -> Any:
    """The mutagen file object for ``path`` (TagWriteError if mutagen cannot read it)."""
    try:
        tagged = mutagen.File(path)
    except Exception as error:
        raise TagWriteError(path, f"cannot read tags ({error})") from None
    if tagged is None:
        raise TagWriteError(path, "no genre tag support for this file type")
    return tagged


def _kind(tagged: Any) -> Literal["id3", "vorbis", "mp4"]:
    if isinstance(tagged, (ID3FileType, WAVE, AIFF)):
        return "id3"
    if isinstance(tagged, (FLAC, OggFileType)):
        return "vorbis"
    if isinstance(tagged, MP4):
        return "mp4"
    raise TagWriteError(tagged.filename, f"no genre tag support for {type(tagged).__name__} files")


def _genres(tagged: Any) -> tuple[str, ...]:
    """The genre values stored in ``tagged`` (empty when there are none)."""
    tags, kind = tagged.tags, _kind(tagged)
    if tags is None:
        return ()
    if kind == "id3":
        values = [g for frame in tags.getall("TCON") for g in frame.genres]
    elif kind == "vorbis":
        values = list(tags.get("genre", []))
    else:
        values = [str(g) for g in tags.get(_MP4_GENRE, [])]
        names = TCON.GENRES
        values += [names[n - 1] for n in tags.get(_MP4_GENRE_ID, []) if 0 < n <= len(names)]
    return tuple(v for v in (s.strip() for s in values) if v)


def _set_genres(tagged: Any, genres: tuple[str, ...]) -> None:
    if tagged.tags is None:
        tagged.add_tags()
    tags, kind = tagged.tags, _kind(tagged)
    if kind == "id3":
        tags.delall("TCON")
        tags.add(TCON(encoding=3, text=list(genres)))
    elif kind == "vorbis":
        tags["GENRE"] = list(genres)
    else:
        tags.pop(_MP4_GENRE_ID, None)
        tags[_MP4_GENRE] = list(genres)


def _save(tagged: Any, kind: str) -> None:
    if kind == "id3":
        version = tagged.tags.version[1] if tagged.tags.version[1] in (3, 4) else 4
        # v23_sep=None: several values null-separated in v2.3 too, so "Old-Time / Historic" stays one.
        tagged.save(v2_version=version, v23_sep=None)
    else:
        tagged.save()


def _other_tags(tagged: Any) -> list[tuple[str, str]]:
    """Every tag but the genre (FLAC pictures included), as comparable (key, repr) pairs."""
    skip = {"TCON", "genre", _MP4_GENRE, _MP4_GENRE_ID}
    pictures = [
        ("picture", repr((p.type, p.mime, p.desc, p.data))) for p in getattr(tagged, "pictures", [])
    ]
    if tagged.tags is None:
        return pictures
    if _kind(tagged) == "vorbis":
        return pictures + sorted((k.lower(), v) for k, v in tagged.tags if k.lower() not in skip)
    return pictures + sorted(
        (str(k), repr(v)) for k, v in tagged.tags.items() if str(k) not in skip
    )


def _audio_digest(path: Path) -> tuple[int, str]:
    """(samples, hash) of the decoded audio at its native rate, in bounded memory."""
    digest, count = hashlib.blake2b(digest_size=16), 0
    rate = audio.info(path).sample_rate
    for block in audio.stream(path, sr=rate):
        digest.update(block.tobytes())
        count += len(block)
    return count, digest.hexdigest()


def plan(path: str | os.PathLike, genres: list[str] | tuple[str, ...], mode: Mode) -> GenreChange:
    """What writing ``genres`` with ``mode`` would do to ``path`` (nothing is written).

    skip: keep a file that has any genre; overwrite: replace the genres; merge: keep the
    existing genres and append the new ones not already there (case-insensitive).
    """
    path = Path(path)
    before = _genres(_open(path))
    wanted = tuple(dict.fromkeys(g.strip() for g in genres if g.strip()))
    if mode == "skip":
        after = before if before else wanted
    elif mode == "overwrite":
        after = wanted
    else:
        have = {g.casefold() for g in before}
        after = before + tuple(g for g in wanted if g.casefold() not in have)
    return GenreChange(path, before, after)


def write_genres(
    path: str | os.PathLike, genres: list[str] | tuple[str, ...], mode: Mode, dry_run: bool = False
) -> GenreChange:
    """Write ``genres`` into ``path`` (see :func:`plan`); returns the change, applied unless dry_run.

    The original is replaced only by a verified copy (atomic rename); on any failure it is
    untouched and TagWriteError is raised. A change that empties the genre list is not written.
    """
    change = plan(path, genres, mode)
    if not change.after:  # nothing passed the threshold: never erase a genre
        return GenreChange(change.path, change.before, change.before)
    if dry_run or not change.changed:
        return change
    target = change.path.resolve()  # a symlink keeps pointing at the updated file
    temp = target.with_name(f".{target.stem}{TEMP_MARK}{target.suffix}")
    try:
        shutil.copy2(target, temp)
        _update_copy(target, temp, change.after)
        _replace(target, temp)
    except TagWriteError:
        raise
    except Exception as error:
        raise TagWriteError(target, f"tag write failed, file unchanged ({error})") from error
    finally:
        temp.unlink(missing_ok=True)
    log.debug("wrote %s", change.describe())
    return change


def _update_copy(original: Path, temp: Path, genres: tuple[str, ...]) -> None:
    """Write ``genres`` into ``temp`` (a copy of ``original``) and prove nothing else changed."""
    before = _open(original)
    kind = _kind(before)
    tagged = type(before)(temp)
    _set_genres(tagged, genres)
    _save(tagged, kind)
    after = type(before)(temp)
    if _genres(after) != genres:
        raise TagWriteError(
            original, f"genre did not read back ({_show(_genres(after))}); file unchanged"
        )
    if _other_tags(after) != _other_tags(before):
        raise TagWriteError(original, "the tag library changed other tags; file unchanged")
    try:
        same_audio = _audio_digest(temp) == _audio_digest(original)
    except audio.AudioDecodeError as error:
        raise TagWriteError(
            original, f"cannot verify the audio ({error.reason}); file unchanged"
        ) from None
    if not same_audio:
        raise TagWriteError(original, "the audio changed after the tag write; file unchanged")


def _replace(target: Path, temp: Path) -> None:
    """Flush ``temp`` to disk, keep the original's owner, and rename it over ``target``."""
    stat = target.stat()
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    if hasattr(os, "chown") and (stat.st_uid, stat.st_gid) != (
        temp.stat().st_uid,
        temp.stat().st_gid,
    ):
        try:
            os.chown(temp, stat.st_uid, stat.st_gid)
        except PermissionError:
            log.debug("could not keep the owner of %s", target)
    os.replace(temp, target)
    fsync_folder(target.parent)
