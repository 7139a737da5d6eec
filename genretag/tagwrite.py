"""Everything ``genretag tag`` writes: resumable output tables, and genres inside audio files.

Output tables (:class:`Outputs`): one row per file in a CSV (a header, then one line per file)
or JSON lines, appended whole lines at a time with flush + fsync, so a reader (pandas) always
sees whole rows and a killed run leaves at most one partial last line, which the next run cuts.
Rows are keyed by resolved path, size and mtime; a re-run skips the files whose key is there and
finally compacts the table to the last row of each file. Beside the table: ``<stem>.errors.csv``
(this run's failures), ``<stem>.segments.jsonl`` (window timelines) and ``<stem>.srt/``.

Genre tags (:func:`write_genres`), one genre field per container, multi-valued where allowed:

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

import csv
import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mutagen
import numpy as np
from mutagen.aiff import AIFF
from mutagen.flac import FLAC
from mutagen.id3 import TCON, ID3FileType
from mutagen.mp4 import MP4
from mutagen.ogg import OggFileType
from mutagen.wave import WAVE

from genretag.data import audio
from genretag.errors import ConfigError

log = logging.getLogger(__name__)

FIXED_COLUMNS = ["path", "duration", "size", "mtime_ns"]
Key = tuple[int, int]  # (size in bytes, mtime in ns): a changed file is tagged again
Mode = Literal["skip", "overwrite", "merge"]
MODES: tuple[Mode, ...] = ("skip", "overwrite", "merge")
TEMP_MARK = ".genretag-tmp"
_MP4_GENRE, _MP4_GENRE_ID = "\xa9gen", "gnre"


def file_key(path: Path | str) -> Key:
    """(size, mtime_ns) of ``path``; (-1, -1) when it cannot be read (it matches no row)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


# -- output tables --------------------------------------------------------------------------------
class Table:
    """One row per file, as a CSV line or a JSON line, for one label set."""

    def __init__(self, labels: list[str], top_k: int, threshold: float, fmt: str) -> None:
        self.labels, self.top_k, self.threshold, self.fmt = labels, top_k, threshold, fmt
        tops = [c for i in range(1, top_k + 1) for c in (f"top{i}", f"top{i}_score")]
        self.columns = FIXED_COLUMNS + tops + labels
        self.header = _csv_line(self.columns) if fmt == "csv" else None

    def select(self, scores: np.ndarray) -> list[tuple[str, float]]:
        """Up to top_k (label, score), best first, with score >= threshold."""
        best = np.argsort(-scores, kind="stable")[: self.top_k]
        return [(self.labels[i], float(scores[i])) for i in best if scores[i] >= self.threshold]

    def line(self, path: Path, key: Key, duration: float, scores: np.ndarray) -> str:
        top = self.select(scores)
        if self.fmt == "jsonl":
            row = {
                "path": str(path),
                "duration": round(duration, 3),
                "size": key[0],
                "mtime_ns": key[1],
            }
            row["genres"] = [{"label": label, "score": round(s, 5)} for label, s in top]
            row["scores"] = {
                label: round(float(s), 5) for label, s in zip(self.labels, scores, strict=True)
            }
            return json.dumps(row, ensure_ascii=False) + "\n"
        cells: list[Any] = [path, f"{duration:.3f}", *key]
        for i in range(self.top_k):
            cells += [top[i][0], f"{top[i][1]:.5f}"] if i < len(top) else ["", ""]
        return _csv_line(cells + [f"{s:.5f}" for s in scores])

    def parse(self, line: str) -> tuple[str, Key, dict | list] | None:
        """(path, key, parsed row) of one line; None (and a warning) for a damaged line."""
        if self.fmt == "jsonl":
            return _parse_json(line)
        try:
            row = next(csv.reader([line]))
            return row[0], (int(row[2]), int(row[3])), row
        except (ValueError, IndexError, StopIteration, csv.Error):
            log.warning("ignored a damaged row: %.80s", line)
            return None

    def scores(self, row: dict | list) -> np.ndarray:
        if isinstance(row, dict):
            return np.array([row["scores"][label] for label in self.labels], np.float32)
        return np.array(row[-len(self.labels) :], np.float32)

    def rekey(self, row: dict | list, key: Key) -> str:
        if isinstance(row, dict):
            return (
                json.dumps({**row, "size": key[0], "mtime_ns": key[1]}, ensure_ascii=False) + "\n"
            )
        return _csv_line([row[0], row[1], *key, *row[4:]])

    def check(self, path: Path, first: str) -> None:
        """ConfigError unless ``first`` (the header, or the first JSON row) fits these labels."""
        try:
            fits = (
                first == self.header
                if self.fmt == "csv"
                else set(json.loads(first)["scores"]) == set(self.labels)
            )
        except (ValueError, KeyError, TypeError):
            fits = False
        if not fits:
            raise ConfigError(
                f"{path} holds rows for other labels or another --top-k; resume with the same "
                f"--ckpt and --top-k, or choose another --out"
            )


def _csv_line(cells: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


def _parse_json(line: str) -> tuple[str, Key, dict] | None:
    try:
        row = json.loads(line)
        return row["path"], (int(row["size"]), int(row["mtime_ns"])), row
    except (ValueError, KeyError, TypeError):
        log.warning("ignored a damaged row: %.80s", line)
        return None


def _lines(path: Path, header: bool) -> Iterator[str]:
    """Whole lines of ``path`` (none if missing), without a header; a partial last line is dropped."""
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle):
            if raw.endswith(b"\n") and raw.strip() and not (header and number == 0):
                yield raw.decode("utf-8", "surrogateescape")


def _trim_partial(path: Path) -> None:
    """Cut a partial last line (a write killed half-way) so that appends start on a fresh line."""
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        if end != size:
            handle.truncate(end)


class _Appender:
    """An output file opened for appending whole lines: write + flush + fsync per call."""

    def __init__(self, path: Path, header: str | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.failed = path, False
        self.handle = open(path, "ab")  # noqa: SIM115 (closed by close())
        _trim_partial(path)
        if header and os.fstat(self.handle.fileno()).st_size == 0:
            self.write([header])

    def write(self, lines: Sequence[str]) -> None:
        if lines:
            try:
                self.handle.write("".join(lines).encode("utf-8", "surrogateescape"))
                self.handle.flush()
                os.fsync(self.handle.fileno())
            except OSError as error:  # a full disk: name the file (the CLI prints one line)
                self.failed = True
                raise OSError(
                    error.errno,
                    f"could not write {self.path} ({error.strerror}); the lines before are kept, "
                    f"run the same command again when there is room",
                ) from error

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError:
            if not self.failed:  # else: the rest of the failed write, reported already
                raise


def _lock(path: Path, what: Path) -> io.TextIOWrapper:
    """Hold a POSIX lock on ``path`` for writing ``what`` (ConfigError if another run holds it).

    fcntl locks belong to the process: forked decoding workers do not inherit them and the
    kernel drops them when the process dies, so a re-run right after kill -9 can start.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # noqa: SIM115 (closed by Outputs.close())
    try:
        import fcntl

        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(f"{what}: another genretag tag run is writing it") from None
    except ImportError:  # not POSIX: no lock
        pass
    return handle


def sibling(path: Path, tail: str) -> Path:
    return path.with_name(path.stem + tail)


class Outputs:
    """The files a run writes next to ``--out``: rows, segment timelines, SRT captions, errors.

    With several ranks each writes ``<stem>.rank<R>of<W><suffix>`` (and its siblings); rank 0
    merges the parts into ``--out`` at the end. Rows already written (by any part) are loaded
    first, so a re-run after a crash skips the files that are done.
    """

    def __init__(
        self, out: Path, table: Table, rank: int, world: int, segments: bool, srt: bool
    ) -> None:
        if out.suffix.lower() not in (".csv", ".jsonl"):
            raise ConfigError(f"--out {out}: use a .csv or a .jsonl file name")
        self.out, self.table, self.segments, self.srt, self.world = out, table, segments, srt, world
        self.own = out if world == 1 else sibling(out, f".rank{rank}of{world}{out.suffix}")
        self.srt_dir = sibling(out, ".srt")
        self.rows = self.timelines = self.errors = self.lock = None

    def sources(self) -> list[Path]:
        """--out and every part of it (this run's or an interrupted sharded run's)."""
        pattern = re.compile(
            re.escape(self.out.stem) + r"\.rank\d+of\d+" + re.escape(self.out.suffix)
        )
        parts = sorted(
            p
            for p in self.out.parent.glob(f"{glob.escape(self.out.stem)}.rank*")
            if pattern.fullmatch(p.name)
        )
        return [self.out, *parts]

    def rows_in(self) -> Iterator[tuple[str, Key, dict | list]]:
        """Every whole row of every source, oldest first (ConfigError if one has other columns)."""
        for source in self.sources():
            for number, line in enumerate(_lines(source, header=False)):
                if number == 0:
                    self.table.check(source, line)
                    if self.table.fmt == "csv":
                        continue
                parsed = self.table.parse(line)
                if parsed is not None:
                    yield parsed

    def done(self) -> dict[str, Key]:
        """The key of the latest row of each path already written."""
        return {path: key for path, key, _ in self.rows_in()}

    def open(self) -> None:
        """Lock this run's files, cut torn last lines, and start a new errors file."""
        self.lock = _lock(self.own.with_name(f".{self.own.name}.lock"), self.own)
        self.rows = _Appender(self.own, self.table.header)
        self.timelines = (
            _Appender(sibling(self.own, ".segments.jsonl"), None) if self.segments else None
        )
        errors = sibling(self.own, ".errors.csv")
        errors.unlink(missing_ok=True)  # the errors of this run only: earlier failures are retried
        self.errors = _Appender(errors, _csv_line(["path", "error"]))

    def add(self, rows: list[str], timelines: list[str]) -> None:
        if self.timelines is not None:
            self.timelines.write(timelines)  # before the rows: a row marks its file done
        self.rows.write(rows)

    def error(self, path: Path | str, message: str) -> None:
        self.errors.write([_csv_line([str(path), message])])

    def timeline(
        self,
        path: Path,
        key: Key,
        steps: np.ndarray,
        duration: float,
        hop_s: float,
        window_s: float,
    ) -> str:
        """The JSON line of a file's window scores ``steps`` (N, C); SRT captions if multiclass."""
        starts = [round(i * hop_s, 3) for i in range(len(steps))]
        labels = self.table.labels
        row = {
            "path": str(path),
            "size": key[0],
            "mtime_ns": key[1],
            "window": window_s,
            "hop": hop_s,
        }
        row["labels"] = labels
        row["start"] = starts
        row["top"] = [labels[i] for i in steps.argmax(1)]
        row["scores"] = np.round(steps.astype(np.float64), 5).tolist()
        if self.srt:
            row["srt"] = str(write_srt(self.srt_dir, path, row["top"], hop_s, duration))
        return json.dumps(row, ensure_ascii=False) + "\n"

    def close(self) -> None:
        for appender in (self.rows, self.timelines, self.errors):
            if appender is not None:
                appender.close()
        if self.lock is not None:
            Path(self.lock.name).unlink(missing_ok=True)
            self.lock.close()

    def finish(self) -> int:
        """Merge parts into --out and keep one row per file (rank 0); returns the failures listed."""
        kept = _compact(
            self.out, self.sources(), self.table, header=self.table.header, stale_check=True
        )
        if self.segments:
            timelines = [sibling(s, ".segments.jsonl") for s in self.sources()]
            _compact(sibling(self.out, ".segments.jsonl"), timelines, None, None, keep=kept)
        runs = (
            [self.out]
            if self.world == 1
            else [
                sibling(self.out, f".rank{r}of{self.world}{self.out.suffix}")
                for r in range(self.world)
            ]
        )
        lines = [line for run in runs for line in _lines(sibling(run, ".errors.csv"), header=True)]
        for part in self.sources()[1:]:  # merged; an interrupted run's errors are retried anyway
            for path in (part, sibling(part, ".segments.jsonl"), sibling(part, ".errors.csv")):
                path.unlink(missing_ok=True)
        errors = sibling(self.out, ".errors.csv")
        if lines:
            _atomic_write(errors, [_csv_line(["path", "error"]), *lines])
        else:
            errors.unlink(missing_ok=True)
        return len(lines)


def _compact(
    target: Path,
    sources: list[Path],
    table: Table | None,
    header: str | None,
    stale_check: bool = False,
    keep: dict[str, Key] | None = None,
) -> dict[str, Key]:
    """Rewrite ``target`` from ``sources`` with the last row of each path (atomically, if needed).

    ``stale_check`` drops rows of files that exist with another size/mtime; ``keep`` keeps only
    rows whose path is in it. Returns the kept {path: key}.
    """
    parse = table.parse if table else _parse_json
    latest: dict[str, tuple[Key, int, int]] = {}
    total = 0
    for s, source in enumerate(sources):
        for n, line in enumerate(_lines(source, header is not None)):
            total += 1
            parsed = parse(line)
            if parsed is not None:
                latest[parsed[0]] = (parsed[1], s, n)
    kept = {p: v for p, v in latest.items() if _keep(p, v[0], stale_check, keep)}
    clean = len(sources) == 1 and len(kept) == total and _ends_whole(target)
    if not clean and (sources[1:] or target.exists()):
        wanted = {(s, n) for _, s, n in kept.values()}
        lines = ([header] if header else []) + [
            line
            for s, source in enumerate(sources)
            for n, line in enumerate(_lines(source, header is not None))
            if (s, n) in wanted
        ]
        _atomic_write(target, lines)
    return {p: v[0] for p, v in kept.items()}


def _keep(path: str, key: Key, stale_check: bool, keep: dict[str, Key] | None) -> bool:
    if keep is not None:
        return path in keep
    if stale_check:
        now = file_key(path)
        return now == key or now == (-1, -1)  # a file gone (or on another machine) keeps its row
    return True


def _ends_whole(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _atomic_write(path: Path, lines: Iterable[str]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as handle:
        for line in lines:
            handle.write(line.encode("utf-8", "surrogateescape"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def write_srt(folder: Path, path: Path, top: list[str], hop_s: float, duration: float) -> Path:
    """SRT captions of the top label per segment (runs of one label merged) for ``path``."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    target = folder / f"{path.stem}.{digest}.srt"
    cues, start = [], 0
    for i in range(1, len(top) + 1):
        if i == len(top) or top[i] != top[start]:
            end = min(i * hop_s, max(duration, start * hop_s))
            cues.append(
                f"{len(cues) + 1}\n{_srt_time(start * hop_s)} --> {_srt_time(end)}\n{top[start]}\n"
            )
            start = i
    _atomic_write(target, ["\n".join(cues)])
    return target


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


# -- genre tags in audio files ------------------------------------------------------------------
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
    try:
        folder = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
