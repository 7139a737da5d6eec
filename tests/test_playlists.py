"""Genre playlists: relative entries that resolve, one file per genre, safe names, atomic."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mutagen.easyid3 import EasyID3

from genretag.playlists import safe_name, write_playlists
from tests.conftest import write_mp3


def entries(playlist: Path) -> list[bytes]:
    return [
        line for line in playlist.read_bytes().split(b"\n") if line and not line.startswith(b"#")
    ]


@pytest.fixture
def library(tmp_path) -> list[Path]:
    music = tmp_path / "Music" / "Artist & Co" / "Album"
    music.mkdir(parents=True)
    files = [music / "01 one.mp3", music / "02 two, live.mp3", tmp_path / "Music" / "single.mp3"]
    for f in files:
        f.write_bytes(b"not audio")
    return files


def test_one_playlist_per_genre_with_entries_that_resolve(tmp_path, library):
    folder = tmp_path / "Playlists" / "genres"
    rows = [
        (library[0], ["Electronic", "Techno"]),
        (library[1], ["Rock"]),
        (library[2], ["Electronic"]),
        (library[0], ["Electronic"]),  # listed again: once in the playlist
    ]
    written = write_playlists(rows, folder, read_tags=False)
    assert set(written) == {"Electronic", "Techno", "Rock"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "Electronic.m3u8",
        "Rock.m3u8",
        "Techno.m3u8",
    ]
    lines = written["Electronic"].read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["#EXTM3U", "#PLAYLIST:Electronic"]
    assert lines[2] == "#EXTINF:-1,01 one"
    found = entries(written["Electronic"])
    assert found == [b"../../Music/Artist & Co/Album/01 one.mp3", b"../../Music/single.mp3"]
    for raw in found:
        assert not raw.startswith(b"/") and b"\\" not in raw
        assert (folder / os.fsdecode(raw)).resolve() in {f.resolve() for f in library}
    assert (folder / os.fsdecode(entries(written["Rock"])[0])).samefile(library[1])


def test_names_with_slashes_are_safe_files(tmp_path, library):
    written = write_playlists(
        [(library[0], ["Old-Time / Historic", "Jazz: Vocal", "CON", "rock", "Rock"])],
        tmp_path / "lists",
        read_tags=False,
    )
    assert written["Old-Time / Historic"].name == "Old-Time - Historic.m3u8"
    assert written["Old-Time / Historic"].parent == tmp_path / "lists"  # no sub-folder made
    assert written["CON"].name == "CON_.m3u8"
    assert {written["rock"].name, written["Rock"].name} == {"rock.m3u8", "Rock (2).m3u8"}
    text = written["Old-Time / Historic"].read_text(encoding="utf-8")
    assert "#PLAYLIST:Old-Time / Historic" in text
    assert len(list((tmp_path / "lists").iterdir())) == 5  # no temporary files left
    assert (
        safe_name("..") == "_" and "/" not in safe_name("a/b\\c") and "\n" not in safe_name("a\nb")
    )


def test_extinf_from_tags_and_rewrite_replaces(tmp_path):
    song = tmp_path / "music" / "song.mp3"
    write_mp3(song, 2.0, 440.0)
    tags = EasyID3()
    tags.update({"artist": "Ünïcode Artist", "title": "A, B"})
    tags.save(song)
    folder = tmp_path / "lists"
    write_playlists([(song, ["Pop"])], folder)
    text = (folder / "Pop.m3u8").read_text(encoding="utf-8")
    assert "#EXTINF:2,Ünïcode Artist - A, B\n../music/song.mp3\n" in text
    write_playlists([(song, ["Pop"]), (song, ["Rock"])], folder, read_tags=False)
    assert (folder / "Pop.m3u8").read_text(encoding="utf-8").count("song.mp3") == 1


@pytest.mark.skipif(sys.platform != "linux", reason="non-UTF-8 names need a byte file system")
def test_non_utf8_file_name_keeps_its_bytes(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 <1>.mp3"
    with open(raw, "wb") as handle:
        handle.write(b"x")
    written = write_playlists([(Path(os.fsdecode(raw)), ["Jazz"])], tmp_path / "lists")
    (entry,) = entries(written["Jazz"])
    assert entry == b"../caf\xe9 <1>.mp3"
    assert os.path.exists(os.fsencode(tmp_path / "lists") + b"/" + entry)
