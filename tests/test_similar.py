"""Embeddings from the tagging pass (``tag --embeddings``) kept in step with the table on resume;
``genretag similar`` neighbours and playlists; the report's map of the library."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from genretag.cli import main as cli
from genretag.data import audio
from genretag.network import Network
from genretag.report import read_table, write_report
from genretag.tagger.command import main as tag
from genretag.windows import windows
from tests.test_tagging import LABELS, save_checkpoint, write_audio

FILES = [
    ("a.wav", 2.5, 220.0),
    ("b.flac", 0.6, 440.0),
    ("c.ogg", 1.7, 880.0),
    ("d.wav", 3.2, 1760.0),
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", LABELS)


def make_files(root: Path, specs=FILES) -> list[Path]:
    for name, seconds, freq in specs:
        write_audio(root / name, seconds, 22_050, 1, freq)
    return [root / name for name, _, _ in specs]


def matrix(out: Path) -> dict[str, np.ndarray]:
    """{path: embedding} from the table and its .npy, row by row."""
    rows = read_table(out)[0]["path"].tolist()
    data = np.load(out.with_name(out.stem + ".embeddings.npy"))
    assert data.shape[0] == len(rows)
    return dict(zip(rows, data, strict=True))


def test_embeddings_are_the_pooled_features_of_the_windows(ckpt: Path, tmp_path: Path) -> None:
    paths = make_files(tmp_path / "lib")
    out = tmp_path / "tags.csv"
    assert tag([str(tmp_path / "lib"), "--ckpt", str(ckpt), "--out", str(out), "--embeddings",
                "--workers", "0", "--quiet", "--precision", "fp32"]) == 0  # fmt: skip
    got = matrix(out)
    model = Network.load(ckpt)
    rate = int(model.hparams["sample_rate"])
    window = round(model.hparams["window_seconds"] * rate)
    for path in paths:
        cut = windows(audio.decode(path, sr=rate), window)  # (W, T): what test scores
        with torch.no_grad():
            want = model.features(torch.from_numpy(cut)).mean(0).numpy()
        np.testing.assert_allclose(got[str(path)], want, rtol=1e-4, atol=1e-5)


def test_a_resumed_run_keeps_the_embeddings_in_step(ckpt: Path, tmp_path: Path) -> None:
    paths = make_files(tmp_path / "lib")
    base = ["--ckpt", str(ckpt), "--workers", "0", "--quiet"]
    fresh = tmp_path / "fresh.csv"
    assert tag([str(tmp_path / "lib"), *base, "--out", str(fresh), "--embeddings"]) == 0
    out = tmp_path / "tags.csv"
    # a first run without embeddings, on two files: the --embeddings run scores them again
    assert tag([str(paths[3]), str(paths[1]), *base, "--out", str(out)]) == 0
    assert tag([str(paths[2]), *base, "--out", str(out), "--embeddings"]) == 0
    log = tmp_path / "tags.embeddings.jsonl"
    with open(log, "a") as handle:  # killed after an embedding, before its row; then mid-line
        handle.write(log.read_text().splitlines()[0].replace("c.ogg", "zz.ogg") + "\n")
        handle.write('{"path": "' + str(paths[0]))
    assert tag([str(tmp_path / "lib"), *base, "--out", str(out), "--embeddings"]) == 0
    got, want = matrix(out), matrix(fresh)
    assert sorted(got) == sorted(map(str, paths))
    assert read_table(out)[0]["path"].tolist() != read_table(fresh)[0]["path"].tolist()
    for path in map(str, paths):  # row by row, the same vector as the uninterrupted run
        np.testing.assert_allclose(got[path], want[path], rtol=1e-5, atol=1e-6)
    # a later run without --embeddings still leaves the matrix aligned with the table
    (tmp_path / "lib" / "e.wav").write_bytes((tmp_path / "lib" / "a.wav").read_bytes())
    assert tag([str(tmp_path / "lib"), *base, "--out", str(out)]) == 0
    got = matrix(out)
    assert np.isnan(got[str(tmp_path / "lib" / "e.wav")]).all()
    np.testing.assert_allclose(got[str(paths[0])], want[str(paths[0])], rtol=1e-5, atol=1e-6)


@pytest.fixture
def clustered(ckpt: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A table of 13 files whose embeddings are set by hand: 6 along e0, 6 along e1, one on e2."""
    specs = [(f"{g}{i}.wav", 0.4, 300.0 + 50 * i) for g in "xy" for i in range(6)]
    paths = make_files(tmp_path / "lib", [*specs, ("odd.wav", 0.4, 3000.0)])
    out = tmp_path / "tags.csv"
    assert tag([str(tmp_path / "lib"), "--ckpt", str(ckpt), "--out", str(out), "--embeddings",
                "--workers", "0", "--quiet", "--precision", "fp32"]) == 0  # fmt: skip
    rows = read_table(out)[0]["path"].tolist()
    vectors = np.zeros((len(rows), 8), np.float32)
    for i, path in enumerate(rows):
        name = Path(path).name
        axis = 2 if name == "odd.wav" else int(name[0] == "y")
        vectors[i, axis] = 1.0 + 0.01 * int(name[1]) if name[1].isdigit() else 1.0
    np.save(out.with_name("tags.embeddings.npy"), vectors)
    return out, paths


def test_similar_writes_neighbours_and_playlists(
    clustered: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    out, paths = clustered
    seed = tmp_path / "lib" / "x2.wav"
    lists = tmp_path / "lists"
    assert (
        cli(["similar", str(out), "-n", "3", "--playlists", str(lists), "--seed", str(seed)]) == 0
    )
    found = pd.read_csv(tmp_path / "tags.similar.csv")
    assert len(found) == 13 * 3
    for path, group in found.groupby("path"):
        name = Path(path).name
        assert list(group["rank"]) == [1, 2, 3]
        assert str(path) not in set(group["neighbour"])
        if name != "odd.wav":  # its neighbours are from its own cluster
            assert {Path(n).name[0] for n in group["neighbour"]} == {name[0]}
    lines = (lists / "More like x2.m3u8").read_text().splitlines()
    entries = [line for line in lines if not line.startswith("#")]
    assert entries[0] == "../lib/x2.wav"  # the seed first, relative to the playlist
    assert len(entries) == 4 and all(re.fullmatch(r"\.\./lib/x\d\.wav", e) for e in entries)
    parquet = tmp_path / "n.parquet"
    assert (
        cli(["similar", str(out), "-n", "2", "--out", str(parquet), "--playlists", str(lists)]) == 0
    )
    assert len(pd.read_parquet(parquet)) == 13 * 2
    by_genre = {p.name for p in lists.glob("More like *.m3u8")} - {"More like x2.m3u8"}
    top = set(read_table(out)[0]["top1"])
    assert by_genre == {f"More like {g}.m3u8".replace("/", "-") for g in top}


def test_similar_needs_embeddings(ckpt: Path, tmp_path: Path, capsys) -> None:
    make_files(tmp_path / "lib", FILES[:2])
    out = tmp_path / "tags.csv"
    assert tag([str(tmp_path / "lib"), "--ckpt", str(ckpt), "--out", str(out), "--quiet",
                "--workers", "0"]) == 0  # fmt: skip
    assert cli(["similar", str(out)]) == 2
    assert "--embeddings" in capsys.readouterr().err


def test_report_maps_the_library(clustered: tuple[Path, list[Path]], tmp_path: Path) -> None:
    out, paths = clustered
    page_path = tmp_path / "report.html"
    write_report(out, page_path, threshold=0.5)
    page = page_path.read_text()
    svg = page[page.index('class="map"') : page.index("</svg>", page.index('class="map"'))]
    titles = re.findall(r"<title>(.*?)</title>", svg)
    assert sorted(t.split("&#10;")[0] for t in titles) == sorted(map(str, paths))
    files = read_table(out)[0]
    assert svg.count('fill="#fff"') == int((files["best"] < 0.5).sum())  # hollow: least confident
    outliers = page[page.index("<h3>Outliers: 1</h3>") :]
    assert str(tmp_path / "lib" / "odd.wav") in outliers.split("</table>")[0]
    assert "<script" not in page and not re.search(r"(src|href)=[\"']?https?:", page)
