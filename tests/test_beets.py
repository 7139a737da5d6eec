"""The beets plugin (beetsplug/genretag.py) with the real beets, in a temporary beets directory:
``beet import`` then ``beet genretag`` tags the library the way ``genretag tag --write-tags``
does, ``-p`` changes nothing, a corrupt file is reported and skipped, items with a genre are
left alone unless forced, ``auto: yes`` tags on import, and a crafted checkpoint runs nothing."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("beets", reason="the beets plugin needs beets (pip install genretag[beets])")

from beets.library import Item  # noqa: E402

from genretag.data import audio  # noqa: E402
from genretag.network import Network  # noqa: E402
from genretag.tagger.command import main as tag_main  # noqa: E402
from genretag.windows import windows  # noqa: E402
from tests.test_checkpoint import System, evil_checkpoint  # noqa: E402
from tests.test_tagging import (  # noqa: E402
    LABELS,
    make_tagged,
    read_genres,
    save_checkpoint,
    write_audio,
)

REPO = Path(__file__).resolve().parents[1]
BEET = Path(sys.executable).with_name("beet")
# beets >= 2.? keeps a list in `genres` (`genre` is gone); older beets one text in `genre`
FIELD = "genres" if "genres" in Item._fields else "genre"
MAX_GENRES, MIN_SCORE = 2, 0.3


def sharp_checkpoint(path: Path, files: list[Path], seed: int = 0) -> Path:
    """save_checkpoint's tiny random model, with a head that tells ``files`` apart.

    A random trunk maps every tone to nearly the same embedding, so every file would get the
    same genres and a comparison would prove little: the head's rows become the embeddings'
    principal directions (centred, scaled to a spread of ~8 logits), so the files' genres differ.
    """
    save_checkpoint(path, LABELS, seed=seed)
    model = Network.load(path).eval()
    sr = int(model.hparams["sample_rate"])
    window = round(model.hparams["window_seconds"] * sr)
    clips = [windows(audio.decode(f, sr=sr), window) for f in files]
    with torch.inference_mode():
        emb = model.trunk(model.frontend(torch.from_numpy(np.concatenate(clips))))  # (N, E)
    mean = emb.mean(0)
    _, spread, directions = torch.linalg.svd(emb - mean, full_matrices=False)
    n = len(LABELS)
    weight = directions[:n] / spread[:n, None] * 8 * len(emb) ** 0.5
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["head.1.weight"] = weight
    checkpoint["state_dict"]["head.1.bias"] = -weight @ mean
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The files every test imports (each test writes the same bytes into its own folder)."""
    return library(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, reference: list[Path]) -> Path:
    return sharp_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", reference)


class Beets:
    """A beets directory under tmp_path (config.yaml, library.db) and ``beet`` run in it."""

    def __init__(self, root: Path, copy: bool = False, **genretag: object) -> None:
        self.root = root
        self.db = root / "library.db"
        config = {
            "directory": str(root / "lib"),
            "library": str(self.db),
            "plugins": "genretag",
            "import": {"copy": copy, "move": False, "write": True, "log": None},
            "genretag": {"max_genres": MAX_GENRES, "min_score": MIN_SCORE, **genretag},
        }
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yaml").write_text(yaml.safe_dump(config))

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "BEETSDIR": str(self.root), "PYTHONPATH": str(REPO)}
        env.pop("PYTHONWARNINGS", None)
        done = subprocess.run(
            [str(BEET), *args], env=env, capture_output=True, text=True, timeout=600
        )
        if ok:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def genres(self) -> dict[str, str]:
        """``{path: genres shown by beet ls}``."""
        lines = self("ls", "-f", f"$path\t${FIELD}").stdout.splitlines()
        return dict(line.split("\t", 1) for line in lines)

    def rows(self) -> list[tuple]:
        """Every item row and flexible attribute in the database (what a run may change)."""
        with sqlite3.connect(self.db) as db:
            items = db.execute("SELECT * FROM items ORDER BY id").fetchall()
            flex = db.execute("SELECT * FROM item_attributes ORDER BY id").fetchall()
        return items + flex


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_genres(
    files: list[Path], ckpts: Path | list[Path], tmp_path: Path, *extra: str
) -> dict[str, str]:
    """What ``genretag tag`` chooses for ``files`` with the plugin's settings: the csv's
    ``genres`` column ("; "-joined, the text beets shows)."""
    out = tmp_path / "expected.csv"
    args = [*map(str, files), "--out", str(out), "--workers", "0"]
    for ckpt in ckpts if isinstance(ckpts, list) else [ckpts]:
        args += ["--ckpt", str(ckpt)]
    args += ["--max-genres", str(MAX_GENRES), "--min-score", str(MIN_SCORE), "--quiet", *extra]
    assert tag_main(args) == 0
    table = pd.read_csv(out, keep_default_na=False)
    return dict(zip(table["path"], table["genres"], strict=True))


def library(root: Path) -> list[Path]:
    """make_tagged's seven formats (a.mp3 has the genre Jazz) and three more tones that differ
    in pitch and length, so that the files do not all score alike."""
    paths = make_tagged(root)
    for i, (seconds, freq) in enumerate([(3.0, 110.0), (0.4, 3000.0), (2.2, 7000.0)]):
        path = root / f"tone{i}.flac"
        write_audio(path, seconds, 44_100, 1, freq=freq)
        paths.append(path.resolve())
    return paths


def test_beet_genretag_tags_like_genretag_tag(ckpt: Path, tmp_path: Path) -> None:
    beet = Beets(tmp_path / "beets", ckpt=str(ckpt), workers=0)
    paths = library(tmp_path / "music")
    beet("import", "-A", "-q", str(tmp_path / "music"))
    assert set(beet.genres()) == set(map(str, paths))
    jazz, corrupt = paths[0], paths[2]  # a.mp3 has a genre; c.ogg is damaged after the import
    corrupt.write_bytes(np.random.default_rng(0).bytes(3000))
    good = [p for p in paths if p not in (jazz, corrupt)]
    expected = expected_genres(good + [jazz], ckpt, tmp_path)
    assert len(set(expected.values())) > 1  # the files do not all get the same genres

    before = ({p: sha(p) for p in paths}, beet.rows())
    pretend = beet("genretag", "-p")
    assert ({p: sha(p) for p in paths}, beet.rows()) == before  # nothing written, nothing stored
    assert pretend.stdout.count(f"{FIELD}:") == len(good)  # each change shown
    summary = f"tagged {len(good)} items, {len(good)} would change, 1 skipped"
    assert summary in pretend.stderr + pretend.stdout

    done = beet("genretag")
    shown = beet.genres()
    for path in good:
        assert shown[str(path)] == expected[str(path)], path.name
        assert read_genres(path) == expected[str(path)].split("; "), path.name
    assert shown[str(jazz)] == "Jazz" and read_genres(jazz) == ["Jazz"]  # force: no
    log = done.stdout + done.stderr
    reported = [line for line in log.splitlines() if str(corrupt) in line]
    assert len(reported) == 1 and "genretag" in reported[0], log
    assert "1 FAILED" in log
    assert shown[str(corrupt)] == ""

    again = {p: sha(p) for p in good}
    forced = beet("genretag", "-f", f"path:{jazz}")  # a query: only that item
    assert beet.genres()[str(jazz)] == expected[str(jazz)]
    assert read_genres(jazz) == expected[str(jazz)].split("; ")
    assert {p: sha(p) for p in good} == again
    assert "tagged 1 items, 1 changed" in forced.stdout + forced.stderr


@pytest.mark.slow
def test_ensemble_and_genre_map_follow_genretag_tag(
    ckpt: Path, reference: list[Path], tmp_path: Path
) -> None:
    other = sharp_checkpoint(tmp_path / "other.ckpt", reference, seed=1)
    genre_map = tmp_path / "genres.yaml"
    genre_map.write_text("rename:\n  Electronic: Electronica\ndrop: [Rock]\n")
    beet = Beets(
        tmp_path / "beets", ckpt=[str(ckpt), str(other)], workers=0, genre_map=str(genre_map)
    )
    paths = library(tmp_path / "music")[1:]  # without the one that has a genre
    beet("import", "-A", "-q", str(tmp_path / "music"))
    beet("genretag")
    want = expected_genres(paths, [ckpt, other], tmp_path, "--genre-map", str(genre_map))
    shown = beet.genres()
    assert all(shown[str(p)] == want[str(p)] for p in paths)
    names = {name for path in paths for name in shown[str(path)].split("; ")}
    assert names <= {"Electronica", "Hip-Hop", "Old-Time / Historic"} and names


def test_auto_tags_on_import(ckpt: Path, tmp_path: Path) -> None:
    """``auto: yes`` with ``copy: yes``: the copies in the library carry the genres (written
    after the importer copied them, as ``import.write`` asks), the originals stay as they were."""
    beet = Beets(tmp_path / "beets", copy=True, ckpt=str(ckpt), auto=True, workers=1)
    sources = library(tmp_path / "music")
    before = {p: sha(p) for p in sources}
    beet("import", "-q", "-A", str(tmp_path / "music"))
    assert {p: sha(p) for p in sources} == before
    shown = beet.genres()
    copies = [Path(p) for p, genres in shown.items() if genres != "Jazz"]
    assert len(copies) == len(sources) - 1 and all(
        tmp_path / "beets" / "lib" in p.parents for p in copies
    )
    expected = expected_genres(copies, ckpt, tmp_path)  # the copies' audio is the originals'
    for path in copies:
        assert shown[str(path)] == expected[str(path)], path.name
        assert read_genres(path) == expected[str(path)].split("; "), path.name


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", System(marker))
    beet = Beets(tmp_path / "beets", ckpt=str(evil), workers=0)
    write_audio(tmp_path / "music" / "x.flac", 1.0, 44_100)
    beet("import", "-A", "-q", str(tmp_path / "music"))
    refused = beet("genretag", ok=False)
    assert refused.returncode != 0 and not marker.exists()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused to load: it needs posix.system" in lines[0], lines
    assert str(evil) in lines[0]


def test_bad_settings_are_one_line(tmp_path: Path, ckpt: Path) -> None:
    write_audio(tmp_path / "music" / "x.flac", 1.0, 44_100)
    for settings, words in [
        ({}, "set genretag.ckpt"),
        ({"ckpt": str(ckpt), "min_score": 2}, "genretag.min_score: must be a number in [0.0, 1.0]"),
        ({"ckpt": str(tmp_path / "missing.ckpt")}, str(tmp_path / "missing.ckpt")),
    ]:
        beet = Beets(tmp_path / f"beets{len(words)}", **settings)
        beet("import", "-A", "-q", str(tmp_path / "music"))
        failed = beet("genretag", ok=False)
        lines = failed.stderr.strip().splitlines()
        assert failed.returncode != 0 and len(lines) == 1 and words in lines[0], lines


def test_a_published_model_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ckpt: musicnn-msd`` is musicnn's model, converted into the cache on first use, and the
    items get the genres of its default map, as ``genretag tag --ckpt musicnn-msd`` gives."""
    pytest.importorskip("musicnn", reason="needs pip install --no-deps musicnn==0.1.0")
    monkeypatch.setenv("GENRETAG_CACHE", str(tmp_path / "cache"))
    beet = Beets(tmp_path / "beets", ckpt="musicnn-msd", workers=0, force=True)
    paths = library(tmp_path / "music")
    beet("import", "-A", "-q", str(tmp_path / "music"))
    shown = beet("genretag", "-p")
    assert "FAILED" not in shown.stdout + shown.stderr
    assert list((tmp_path / "cache").glob("musicnn-msd-*.ckpt"))
    expected = expected_genres(paths, "musicnn-msd", tmp_path)  # type: ignore[arg-type]
    written = {g for genres in expected.values() if genres for g in genres.split("; ")}
    assert written and not written & {"60s", "70s", "80s", "90s", "00s", "female vocalists"}
    for path in paths:
        if expected[str(path)]:  # the same choice as tag's
            assert expected[str(path)] in shown.stdout, path.name
