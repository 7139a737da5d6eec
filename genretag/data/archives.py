"""Archives once downloaded: verify (SHA1), unpack atomically, check every file (checksums).

Used by genretag.commands.download; see its docstring for the guarantees (a folder that exists is
complete, a bad archive is moved aside, known-bad FMA tracks are reported as known).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from genretag.data.fma import KNOWN_BAD_TRACKS, audio_relpath

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_LISTED = 20  # per-file failures printed before "... and N more"
GIB = 1 << 30


class DownloadError(Exception):
    """A failure the user must act on; ``str(err)`` is one line naming the file or URL."""

    exit_code = 2


class TransferError(DownloadError):
    """The network failed after retries; running the same command again resumes."""

    exit_code = 1


@dataclass
class ChecksumReport:
    """Outcome of checking an extracted folder against its ``checksums`` file."""

    checked: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relpath, "SHA1 mismatch"|"missing")
    known: list[tuple[int, str, str]] = field(default_factory=list)  # (track_id, reason, status)


# --- download ---------------------------------------------------------------------------------


def _bar(total: int | None, desc: str, quiet: bool, initial: int = 0, unit: str = "B") -> tqdm:
    """A progress bar on stderr (bytes get MB/s and an ETA); silent under ``--quiet``."""
    scale = unit == "B"
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        unit_scale=scale,
        unit_divisor=1024 if scale else 1000,
        disable=quiet,
        dynamic_ncols=True,
    )


def _check_space(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DownloadError(
            f"not enough free space in {folder}: {what} needs about {need / GIB:.1f} GiB, "
            f"{free / GIB:.1f} GiB free; free some space or pass --to with another disk"
        )


def _sha1(path: Path, bar: tqdm | None = None) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return digest.hexdigest()


def _move_aside(path: Path, final: Path, tag: str) -> Path:
    bad = final.with_name(f"{final.name}.bad-{tag}")
    os.replace(path, bad)
    return bad


def verify_archive(path: Path, final: Path, sha1: str | None, quiet: bool = False) -> None:
    """Check ``path`` (the archive, maybe still ``.part``) against ``sha1``; move it aside if bad."""
    if sha1 is None:
        log.info("%s: no confirmed checksum; its CRCs are checked while extracting", final.name)
        return
    with _bar(path.stat().st_size, f"SHA1 {final.name}", quiet) as bar:
        got = _sha1(path, bar)
    if got != sha1:
        bad = _move_aside(path, final, got[:8])
        raise DownloadError(
            f"{final.name}: SHA1 {got} does not match the published {sha1}; the file was moved "
            f"to {bad} (delete it when done); run the same command again to download it afresh"
        )


# --- extraction -------------------------------------------------------------------------------


def _members(zf: zipfile.ZipFile, zip_path: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Files in the zip with their safe relative paths, the single top folder stripped."""
    out = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        if info.is_dir() or name.startswith("__MACOSX/"):
            continue
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or ":" in rel.parts[0]:
            raise DownloadError(f"{zip_path}: unsafe member path {name!r}; refusing to extract")
        out.append((info, rel))
    tops = {rel.parts[0] for _, rel in out}
    if len(tops) == 1 and all(len(rel.parts) > 1 for _, rel in out):
        out = [(info, PurePosixPath(*rel.parts[1:])) for info, rel in out]
    return out


def extract(zip_path: Path, tmp: Path, quiet: bool = False) -> None:
    """Unpack ``zip_path`` into the fresh folder ``tmp``; a damaged zip is moved aside."""
    shutil.rmtree(tmp, ignore_errors=True)  # left over from an interrupted run
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _members(zf, zip_path)
            size = sum(info.file_size for info, _ in members)
            _check_space(zip_path.parent, size, f"extracting {zip_path.name}")
            with _bar(size, f"extract {zip_path.name}", quiet) as bar:
                for info, rel in members:
                    target = tmp.joinpath(*rel.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        _copy(src, dst, bar)
    except (zipfile.BadZipFile, EOFError) as exc:  # also a CRC mismatch while reading a member
        shutil.rmtree(tmp, ignore_errors=True)
        bad = _move_aside(zip_path, zip_path, "corrupt")
        raise DownloadError(
            f"{zip_path.name} is damaged ({exc}); it was moved to {bad}; run the same command "
            f"again to download it afresh"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _copy(src: BinaryIO, dst: BinaryIO, bar: tqdm) -> None:
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        bar.update(len(chunk))


def _is_placeholder(path: Path) -> bool:
    """Files a repository keeps in an empty data folder (``fma_meta/README.md``, ``.gitkeep``)."""
    return path.name.startswith(".") or path.name.lower().startswith("readme")


def is_complete(dest: Path) -> bool:
    """True when ``dest`` holds more than placeholders: only a finished rename fills it."""
    return dest.is_dir() and any(not _is_placeholder(p) for p in dest.iterdir())


def _put_in_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``, carrying over placeholders (the archive's copy wins)."""
    if dest.exists():
        for path in dest.iterdir():
            if (tmp / path.name).exists():
                log.info("%s: replaced by the archive's copy", path)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            else:
                os.replace(path, tmp / path.name)
        dest.rmdir()
    os.replace(tmp, dest)


# --- per-file checksums -----------------------------------------------------------------------


def _read_checksums(path: Path) -> list[tuple[str, str]]:
    """``sha1sum`` lines (``<sha1>  <path>`` or ``<sha1> *<path>``) -> [(sha1, relpath)]."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, rel = line.strip().partition(" ")
        rel = rel.lstrip(" ").removeprefix("*").removeprefix("./")
        if re.fullmatch(r"[0-9a-fA-F]{40}", digest) and rel:
            entries.append((digest.lower(), rel))
        elif line.strip():
            log.warning("%s: skipping malformed line %r", path, line)
    return entries


def verify_checksums(root: Path, quiet: bool = False, label: str = "") -> ChecksumReport | None:
    """Hash every file listed in ``root/checksums`` (threads); None if there is no such file."""
    listing = root / "checksums"
    if not listing.is_file():
        return None
    entries = _read_checksums(listing)
    known = {audio_relpath(tid): tid for tid in KNOWN_BAD_TRACKS}

    def sha1_or_none(rel: str) -> str | None:
        path = root / rel
        return _sha1(path) if path.is_file() else None

    report = ChecksumReport(checked=len(entries))
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        with _bar(len(entries), f"check {label or root.name}", quiet, unit="file") as bar:
            hashes = pool.map(sha1_or_none, [rel for _, rel in entries])
            for (expected, rel), got in zip(entries, hashes, strict=True):
                bar.update()
                status = "ok" if got == expected else "missing" if got is None else "SHA1 mismatch"
                if rel in known:
                    report.known.append((known[rel], KNOWN_BAD_TRACKS[known[rel]], status))
                elif status != "ok":
                    report.bad.append((rel, status))
    finally:  # on Ctrl-C, do not wait for the files still queued
        pool.shutdown(cancel_futures=True)
    return report


def _print_report(dest: Path, zip_path: Path, report: ChecksumReport, quiet: bool) -> bool:
    """Print the per-file outcome; False when files other than the known-bad ones failed."""
    if report.known and not quiet:
        items = [f"{t:06d} ({why}{'' if s == 'ok' else '; ' + s})" for t, why, s in report.known]
        print(f"{dest}: known-bad tracks, skipped by the loaders: {', '.join(items)}")
    if not report.bad:
        if not quiet:
            print(f"{dest}: all {report.checked} files match the archive's checksums file")
        return True
    for rel, status in report.bad[:MAX_LISTED]:
        print(f"  {dest / rel}: {status}", file=sys.stderr)
    if len(report.bad) > MAX_LISTED:
        print(f"  ... and {len(report.bad) - MAX_LISTED} more", file=sys.stderr)
    print(
        f"genretag download: error: {dest}: {len(report.bad)} of {report.checked} files fail "
        f"the archive's per-file SHA1 (listed above); {zip_path} is kept: delete {dest} and "
        f"run the same command again to extract it again",
        file=sys.stderr,
    )
    return False


# --- orchestration ----------------------------------------------------------------------------
