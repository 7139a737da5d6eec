"""``genretag download`` against a real HTTP server on 127.0.0.1 serving small zips in FMA's layout."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from genretag.commands import download as dl
from genretag.data import archives
from genretag.data.fma import audio_relpath

MP3 = {2: bytes(range(256)) * 600, 5: b"\xff\xfb\x90\x00" * 5000, 99134: b""}  # 99134: no audio


def make_zip(files: dict[str, bytes]) -> bytes:
    """A zip (stored, like FMA's) holding ``files``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def fma_small_zip(wrong: tuple[int, ...] = (), extra_listed: tuple[int, ...] = ()) -> bytes:
    """``fma_small/000/000002.mp3`` ... plus its ``checksums``; ``wrong`` get a bad SHA1 there."""
    files = {f"fma_small/{audio_relpath(t)}": data for t, data in MP3.items()}
    lines = []
    for t, data in MP3.items():
        digest = "0" * 40 if t in wrong else hashlib.sha1(data).hexdigest()
        lines.append(f"{digest}  {audio_relpath(t)}\n")
    lines += [f"{'1' * 40}  {audio_relpath(t)}\n" for t in extra_listed]  # listed, not in the zip
    files["fma_small/checksums"] = "".join(lines).encode()
    files["fma_small/README.txt"] = b"FMA small\n"
    return make_zip(files)


class Server:
    """Serves ``files`` by name; optional Range support and a cut connection on the next request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut_after: int | None = None  # send only this many body bytes, once
        self.requests: list[tuple[str, str | None]] = []
        self.url = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            name, rng = self.path.lstrip("/").split("?")[0], self.headers.get("Range")
            state.requests.append((name, rng))
            data = state.files.get(name)
            if len(state.requests) > 20:  # a retry loop gone wrong fails instead of hanging
                self.send_error(500)
                return
            if data is None:
                self.send_error(404)
                return
            start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and state.ranges else 0
            if start >= len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body, state.cut_after = data[start:][: state.cut_after], None
            self.wfile.write(body)  # HTTP/1.0: the connection closes after this

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)


def serve(monkeypatch: pytest.MonkeyPatch, server: Server, dataset: str, zips: list[bytes]) -> None:
    """Put ``zips`` on the server as ``dataset``'s archives, registered with their SHA1s."""
    archives = []
    for archive, data in zip(dl.DATASETS[dataset].archives, zips, strict=True):
        server.files[archive.filename] = data
        sha1 = hashlib.sha1(data).hexdigest() if archive.sha1 else None
        archives.append(dataclasses.replace(archive, sha1=sha1))
    new = dataclasses.replace(dl.DATASETS[dataset], archives=tuple(archives))
    monkeypatch.setitem(dl.DATASETS, dataset, new)


def run(server: Server, to: Path, *args: str) -> int:
    return dl.main([*args, "--to", str(to), "--base-url", server.url])


def test_full_download_extracts_and_checks(server, monkeypatch, tmp_path, capsys) -> None:
    serve(monkeypatch, server, "fma_small", [fma_small_zip()])
    assert run(server, tmp_path / "data", "fma_small") == 0
    root = tmp_path / "data" / "fma_small"
    assert (root / "000" / "000002.mp3").read_bytes() == MP3[2]
    assert (root / "checksums").is_file() and not (root / "fma_small").exists()
    assert sorted(p.name for p in root.parent.iterdir()) == ["fma_small"]  # zip deleted, no temp
    out = capsys.readouterr().out
    assert "all 3 files match" in out and "099134 (no audio)" in out and "known-bad" in out


def test_cut_connection_is_resumed_with_range(server, monkeypatch, tmp_path) -> None:
    data = fma_small_zip()
    serve(monkeypatch, server, "fma_small", [data])
    server.cut_after = 50_000
    assert run(server, tmp_path, "fma_small", "--quiet", "--keep-archive") == 0
    assert server.requests == [("fma_small.zip", None), ("fma_small.zip", "bytes=50000-")]
    assert (tmp_path / "fma_small.zip").read_bytes() == data


def test_part_file_from_an_earlier_run_is_resumed(server, monkeypatch, tmp_path) -> None:
    data = fma_small_zip()
    serve(monkeypatch, server, "fma_small", [data])
    (tmp_path / "fma_small.zip.part").write_bytes(data[:70_000])
    assert run(server, tmp_path, "fma_small", "--quiet", "--keep-archive") == 0
    assert server.requests == [("fma_small.zip", "bytes=70000-")]
    assert (tmp_path / "fma_small.zip").read_bytes() == data


def test_complete_part_file_is_not_fetched_again(server, monkeypatch, tmp_path) -> None:
    data = fma_small_zip()
    serve(monkeypatch, server, "fma_small", [data])
    (tmp_path / "fma_small.zip.part").write_bytes(data)  # e.g. killed while hashing
    assert run(server, tmp_path, "fma_small", "--quiet") == 0
    assert server.requests == [("fma_small.zip", f"bytes={len(data)}-")]  # answered 416
    assert (tmp_path / "fma_small" / "000" / "000002.mp3").read_bytes() == MP3[2]


def test_server_without_range_restarts_from_zero(server, monkeypatch, tmp_path) -> None:
    data = fma_small_zip()
    serve(monkeypatch, server, "fma_small", [data])
    server.ranges = False
    (tmp_path / "fma_small.zip.part").write_bytes(b"stale bytes " * 1000)
    assert run(server, tmp_path, "fma_small", "--quiet", "--keep-archive") == 0
    assert server.requests == [("fma_small.zip", "bytes=12000-")]  # answered 200: whole file
    assert (tmp_path / "fma_small.zip").read_bytes() == data
    assert (tmp_path / "fma_small" / "000" / "000005.mp3").read_bytes() == MP3[5]


def test_checksum_mismatch_keeps_archive_aside(server, monkeypatch, tmp_path, capsys) -> None:
    data = fma_small_zip()
    serve(monkeypatch, server, "fma_small", [data])
    bad_sha1 = dataclasses.replace(dl.DATASETS["fma_small"].archives[0], sha1="0" * 40)
    monkeypatch.setitem(dl.DATASETS, "fma_small", dl.Dataset("", "", (bad_sha1,)))
    assert run(server, tmp_path, "fma_small", "--quiet") == 2
    kept = tmp_path / f"fma_small.zip.bad-{hashlib.sha1(data).hexdigest()[:8]}"
    assert kept.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]  # nothing extracted
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SHA1" in err and str(kept) in err


def test_complete_archive_is_not_fetched_again(server, monkeypatch, tmp_path, capsys) -> None:
    data = fma_small_zip()
    serve(monkeypatch, server, "fma_small", [data])
    (tmp_path / "fma_small.zip").write_bytes(data)
    assert run(server, tmp_path, "fma_small", "--quiet") == 0
    assert (tmp_path / "fma_small" / "000" / "000002.mp3").is_file()
    assert run(server, tmp_path, "fma_small") == 0  # already extracted: nothing to do
    assert server.requests == []
    assert "already exists" in capsys.readouterr().out


def test_per_file_checksum_failures_are_reported(server, monkeypatch, tmp_path, capsys) -> None:
    serve(monkeypatch, server, "fma_small", [fma_small_zip(wrong=(5, 99134), extra_listed=(7,))])
    assert run(server, tmp_path, "fma_small") == 1
    out, err = capsys.readouterr()
    assert "000/000005.mp3: SHA1 mismatch" in err and "000/000007.mp3: missing" in err
    assert "2 of 4 files" in err and "099134" not in err  # the known-bad track is no surprise
    assert "099134 (no audio; SHA1 mismatch)" in out
    assert (tmp_path / "fma_small" / "000" / "000002.mp3").is_file()  # still in place
    assert (tmp_path / "fma_small.zip").is_file()  # kept to extract again


def test_metadata_lands_directly_in_fma_meta(server, monkeypatch, tmp_path) -> None:
    files = {"fma_metadata/tracks.csv": b"a,b\n", "fma_metadata/genres.csv": b"genre_id\n"}
    serve(monkeypatch, server, "fma_metadata", [make_zip(files)])
    (tmp_path / "fma_meta").mkdir()
    (tmp_path / "fma_meta" / "README.md").write_text("placeholder kept in git\n")
    assert run(server, tmp_path, "fma_metadata", "--quiet") == 0
    meta = tmp_path / "fma_meta"
    assert sorted(p.name for p in meta.iterdir()) == ["README.md", "genres.csv", "tracks.csv"]
    assert (meta / "tracks.csv").read_bytes() == b"a,b\n"


def test_fsdkaggle2018_layout_and_crc_check(server, monkeypatch, tmp_path, capsys) -> None:
    parts = [a.dest.split("/")[1] for a in dl.DATASETS["fsdkaggle2018"].archives]
    zips = [make_zip({f"{p}/x.{'csv' if 'meta' in p else 'wav'}": b"RIFF" * 100}) for p in parts]
    serve(monkeypatch, server, "fsdkaggle2018", zips)
    assert run(server, tmp_path, "fsdkaggle2018", "--quiet") == 0
    root = tmp_path / "FSDKaggle2018"
    names = ["FSDKaggle2018.audio_test", "FSDKaggle2018.audio_train", "FSDKaggle2018.meta"]
    assert sorted(p.name for p in root.iterdir()) == names
    assert (root / "FSDKaggle2018.audio_train" / "x.wav").read_bytes() == b"RIFF" * 100

    damaged = zips[0].replace(b"RIFF" * 100, b"RIFX" + b"RIFF" * 99)  # a member's CRC now fails
    server.files[dl.DATASETS["fsdkaggle2018"].archives[0].filename] = damaged
    (tmp_path / "again").mkdir()
    assert run(server, tmp_path / "again", "fsdkaggle2018", "--quiet") == 2
    assert "damaged" in capsys.readouterr().err
    assert (tmp_path / "again" / "FSDKaggle2018" / "FSDKaggle2018.meta.zip.bad-corrupt").is_file()
    assert not (tmp_path / "again" / "FSDKaggle2018" / "FSDKaggle2018.meta").exists()


def test_zip_path_traversal_is_refused(server, monkeypatch, tmp_path, capsys) -> None:
    serve(monkeypatch, server, "fma_small", [make_zip({"fma_small/../../evil.txt": b"x"})])
    assert run(server, tmp_path / "d", "fma_small", "--quiet") == 2
    assert "unsafe member path" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "d" / "fma_small").exists()


def test_not_enough_disk_space(server, monkeypatch, tmp_path, capsys) -> None:
    serve(monkeypatch, server, "fma_small", [fma_small_zip()])
    usage = archives.shutil._ntuple_diskusage(1, 1, 1)
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda _: usage)
    assert run(server, tmp_path, "fma_small", "--quiet") == 2
    err = capsys.readouterr().err
    assert "not enough free space" in err and str(tmp_path) in err


def test_http_error_and_bad_command_line(server, tmp_path, capsys) -> None:
    assert run(server, tmp_path, "fma_small", "--quiet") == 2  # not on this server: 404
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HTTP 404" in err and server.url in err
    assert dl.main(["fma_tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice: 'fma_tiny'" in err
    assert dl.main(["--help"]) == 0
    assert "7.2 GiB" in capsys.readouterr().out


def test_unreachable_server_exits_1_and_part_resumes_later(server, monkeypatch, tmp_path, capsys):
    data = fma_small_zip()
    serve(monkeypatch, server, "fma_small", [data])
    url, server.url = server.url, "http://127.0.0.1:9"  # nothing listens on the discard port
    assert run(server, tmp_path, "fma_small", "--quiet") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "http://127.0.0.1:9/fma_small.zip" in err
    (tmp_path / "fma_small.zip.part").write_bytes(data[:1000])
    server.url = url
    assert run(server, tmp_path, "fma_small", "--quiet") == 0
    assert server.requests == [("fma_small.zip", "bytes=1000-")]
