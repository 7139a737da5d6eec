"""``genretag download``: fetch the official archives, verify them, unpack them atomically.

* **Resumable**: bytes go to ``<archive>.zip.part``; a new run asks for the rest with an HTTP
  ``Range`` header (a server that answers ``200`` instead restarts cleanly from byte 0), and a
  dropped connection is retried from where it stopped.
* **Verified**: FMA zips against the SHA1s published in the dataset's README. A mismatching
  archive is moved aside to ``<archive>.zip.bad-<sha1 prefix>``, never deleted silently.
  FSDKaggle2018: Zenodo publishes MD5s, but we could not confirm their values offline, so none are
  hard-coded; its zips are checked by the CRC-32 of every member during extraction instead.
* **Atomic**: a zip is unpacked into a hidden sibling ``.<folder>.partial`` and renamed into place,
  so a folder that exists is complete. The zip's single top folder (``fma_small/``,
  ``fma_metadata/``) is stripped; members that would land outside the folder are refused.
* **Per-file check**: FMA audio zips carry a ``checksums`` file (``sha1sum -c`` format); every file
  is hashed after extraction (in threads). Known-bad tracks (:data:`KNOWN_BAD_TRACKS`) are
  reported as known; anything else that fails is listed and makes the command fail.
* **Disk space** is checked before downloading (what is left to fetch plus at least as much again
  for the extracted files) and, exactly, from the zip's declared sizes before extracting.

Exit status of :func:`main` (each failure is one line on stderr naming the file or URL and what
to do): 0 done; 1 the network or the disk failed (running the same command again resumes), or
extracted files fail their per-file checksum; 2 something must change first: the command line, an
HTTP error (wrong URL or mirror), an archive whose SHA1 or CRC is wrong, not enough free space;
130 interrupted.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genretag import __version__
from genretag.data.archives import (
    DownloadError,
    TransferError,
    _bar,
    _check_space,
    _print_report,
    _put_in_place,
    extract,
    is_complete,
    verify_archive,
    verify_checksums,
)
from genretag.errors import CommandParser, run_command

log = logging.getLogger(__name__)

FMA_URL = "https://os.unil.cloud.switch.ch/fma"
ZENODO_URL = "https://zenodo.org/record/2552860/files"  # FSDKaggle2018
CHUNK = 1 << 20
TIMEOUT_S = 60.0
RETRIES = 3  # consecutive failed attempts without progress before giving up
RETRY_WAIT_S = 1.0  # doubled after each failed attempt


@dataclass(frozen=True)
class Archive:
    """One zip: where it comes from, its SHA1 (None: CRC only) and its folder under ``--to``."""

    filename: str
    url: str
    dest: str
    sha1: str | None = None


@dataclass(frozen=True)
class Dataset:
    """What ``genretag download <name>`` fetches; ``size`` and ``summary`` are for ``--help``."""

    size: str
    summary: str
    archives: tuple[Archive, ...]


def _fma(name: str, sha1: str, dest: str | None = None) -> tuple[Archive, ...]:
    return (Archive(f"{name}.zip", f"{FMA_URL}/{name}.zip", dest or name, sha1),)


def _zenodo(part: str) -> Archive:
    name = f"FSDKaggle2018.{part}"
    return Archive(f"{name}.zip", f"{ZENODO_URL}/{name}.zip?download=1", f"FSDKaggle2018/{name}")


DATASETS: dict[str, Dataset] = {
    "fma_metadata": Dataset(
        "342 MiB",
        "tracks.csv, genres.csv, features.csv ... -> fma_meta/",
        _fma("fma_metadata", "f0df49ffe5f2a6008d7dc83c6915b31835dfe733", "fma_meta"),
    ),
    "fma_small": Dataset(
        "7.2 GiB",
        "8,000 30 s clips, 8 balanced top genres -> fma_small/",
        _fma("fma_small", "ade154f733639d52e35e32f5593efe5be76c6d70"),
    ),
    "fma_medium": Dataset(
        "22 GiB",
        "25,000 30 s clips, 16 unbalanced top genres -> fma_medium/",
        _fma("fma_medium", "c67b69ea232021025fca9231fc1c7c1a063ab50b"),
    ),
    "fma_large": Dataset(
        "93 GiB",
        "106,574 30 s clips, 161 genres -> fma_large/",
        _fma("fma_large", "497109f4dd721066b5ce5e5f250ec604dc78939e"),
    ),
    "fma_full": Dataset(
        "879 GiB",
        "106,574 untrimmed tracks -> fma_full/",
        _fma("fma_full", "0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab"),
    ),
    "fsdkaggle2018": Dataset(
        "~5 GB",
        "Freesound 41 classes (Zenodo): audio_train, audio_test, meta -> FSDKaggle2018/",
        tuple(_zenodo(part) for part in ("meta", "audio_test", "audio_train")),
    ),
}


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"genretag/{__version__} (python urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _download_once(url: str, part: Path, quiet: bool) -> None:
    """One request: append to ``part`` from its current size; raise ConnectionError if cut."""
    offset = part.stat().st_size if part.exists() else 0
    name = part.name.removesuffix(".part")
    try:
        resp = _open(url, offset)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        if exc.headers.get("Content-Range", "") == f"bytes */{offset}":
            return  # the .part already holds the whole file
        log.info("%s: cannot resume (HTTP 416); downloading again from the start", url)
        part.unlink()
        return _download_once(url, part, quiet)
    with resp:
        start, total = 0, resp.headers.get("Content-Length")
        total = int(total) if total else None
        if resp.status == 206:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if m is None or int(m[1]) != offset:
                part.unlink()
                raise ConnectionError(f"unexpected Content-Range {m and m[0]!r}; restarting")
            start, total = offset, None if m[2] == "*" else int(m[2])
        elif offset:
            log.info("%s: the server ignored the Range request; downloading from the start", url)
        if total is not None:  # the rest of the zip, then at least as much again unpacked
            _check_space(part.parent, total - start + total, f"{name} (zip + files)")
        with (
            open(part, "ab" if start else "wb") as out,
            _bar(total, name, quiet, start) as bar,
        ):
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
            written = out.tell()
    if total is not None and written != total:
        raise ConnectionError(f"connection closed after {written} of {total} bytes")


def download(url: str, part: Path, quiet: bool = False) -> None:
    """Download ``url`` into ``part``, resuming what is there and retrying dropped connections."""
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            return _download_once(url, part, quiet)
        except urllib.error.HTTPError as exc:
            raise DownloadError(
                f"HTTP {exc.code} {exc.reason} for {url}; check the dataset name and --base-url, "
                f"or try again later"
            ) from None
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
            ssl.SSLError,
        ) as exc:  # other OSErrors (disk full, permissions) are not retried
            reason = getattr(exc, "reason", None) or exc
            progressed = part.exists() and part.stat().st_size > before
            failures = 0 if progressed else failures + 1
            if failures > RETRIES:
                raise TransferError(
                    f"cannot download {url} ({reason}); check your network connection (or "
                    f"--base-url), then run the same command again to resume"
                ) from None
            wait = RETRY_WAIT_S * 2 ** max(failures - 1, 0)
            log.warning("%s: %s; retrying in %.0f s", url, reason, wait)
            time.sleep(wait)


def install_archive(
    archive: Archive,
    to: Path,
    base_url: str | None = None,
    keep_archive: bool = False,
    quiet: bool = False,
) -> bool:
    """Download, verify and unpack one archive to ``to / archive.dest``; False if files failed."""
    say: Callable[[str], None] = (lambda _: None) if quiet else print
    dest = to / archive.dest
    if is_complete(dest):
        say(f"{dest} already exists; nothing to do (delete it to download it again)")
        return True
    dest.parent.mkdir(parents=True, exist_ok=True)
    zip_path = dest.parent / archive.filename
    if zip_path.exists():
        verify_archive(zip_path, zip_path, archive.sha1, quiet)
    else:
        url = archive.url if base_url is None else f"{base_url.rstrip('/')}/{archive.filename}"
        part = zip_path.with_name(f"{zip_path.name}.part")
        download(url, part, quiet)
        verify_archive(part, zip_path, archive.sha1, quiet)
        os.replace(part, zip_path)
    tmp = dest.with_name(f".{dest.name}.partial")
    extract(zip_path, tmp, quiet)
    report = verify_checksums(tmp, quiet, dest.name)
    _put_in_place(tmp, dest)
    ok = report is None or _print_report(dest, zip_path, report, quiet)
    if ok and not keep_archive:
        zip_path.unlink()
    say(f"{archive.filename} -> {dest}")
    return ok


def download_dataset(
    name: str,
    to: str | os.PathLike = ".",
    base_url: str | None = None,
    keep_archive: bool = False,
    quiet: bool = False,
) -> bool:
    """Fetch every archive of ``DATASETS[name]`` under ``to``; False if per-file checks failed."""
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    results = [
        install_archive(archive, Path(to), base_url, keep_archive, quiet)
        for archive in DATASETS[name].archives
    ]
    return all(results)


def build_parser() -> argparse.ArgumentParser:
    """The ``genretag download`` command line."""
    rows = "\n".join(f"  {n:<14}{d.size:>9}  {d.summary}" for n, d in DATASETS.items())
    parser = CommandParser(
        prog="genretag download",
        description="Download an official dataset archive, verify it and unpack it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"datasets (archive size; the folder created under --to):\n{rows}\n\n"
        "An interrupted download resumes when the same command is run again. The archive and "
        "its\nunpacked files must fit on the disk at the same time.\n\nExit status: 0 done; 1 "
        "network or disk failure (run again to resume) or files failing\ntheir checksum; 2 bad "
        "command line, HTTP error, bad archive or not enough space.",
    )
    parser.add_argument(
        "dataset", choices=list(DATASETS), metavar="DATASET", help=f"one of: {', '.join(DATASETS)}"
    )
    parser.add_argument(
        "--to",
        default=".",
        metavar="DIR",
        help="folder that receives the dataset folder and the archive (default: .)",
    )
    parser.add_argument(
        "--keep-archive",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep the .zip after a successful extraction (default: delete it)",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="download <URL>/<archive>.zip from a mirror instead of the official site",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or progress messages; errors are still printed",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``genretag download``; returns the exit status (see the module docstring)."""
    return run_command("download", _main, argv, "run the same command again to resume")


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        ok = download_dataset(args.dataset, args.to, args.base_url, args.keep_archive, args.quiet)
    except DownloadError:
        raise
    except OSError as exc:  # disk full, permissions, ...: the message names the file
        raise TransferError(
            f"{exc}; fix this and run the same command again (downloads resume)"
        ) from exc
    return 0 if ok else 1
