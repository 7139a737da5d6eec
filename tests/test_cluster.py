"""``genretag tag --engine ray`` on one local Ray (2 CPUs): the scores, errors and columns of
plain ``tag``; every file exactly once after a decode worker and an actor die mid-run; a
stopped run resumed; changed files tagged again; lists, URIs and sizing without Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray

from genretag.cluster import results, run
from genretag.cluster.sources import list_files
from genretag.io import file_key
from genretag.tagger.command import main
from tests.ray_faults import FOLDER
from tests.test_tagging import LABELS, make_library, save_checkpoint, write_audio

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def local_ray(faults: Path):
    """One Ray for the module (start-up is slow); its workers can find ``tests`` and the hook."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", FOLDER)}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    os.environ[FOLDER] = str(faults)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"worker_process_setup_hook": "tests.ray_faults.install"},
    )
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", LABELS)


def tag(*args: object) -> int:
    return main([str(a) for a in args])


def parts(folder: Path) -> pd.DataFrame:
    """Every row of every part, duplicates included (what a resumed run must not add)."""
    files = sorted(folder.glob("part-*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def make_tracks(root: Path, n: int) -> list[Path]:
    paths = [root / f"t{i:02d}.wav" for i in range(n)]
    for i, path in enumerate(paths):
        write_audio(path, 0.6 + 0.3 * (i % 4), 16_000, freq=200.0 + 90 * i)
    return paths


# -- Ray -----------------------------------------------------------------------------------------
@pytest.mark.usefixtures("local_ray")
def test_same_scores_errors_and_columns_as_tag(ckpt: Path, tmp_path: Path) -> None:
    library = make_library(tmp_path)
    plain, ray_csv = tmp_path / "plain.csv", tmp_path / "ray" / "tags.csv"
    # fp32 on both: bf16 (what --precision auto picks on AMX CPUs) rounds differently with how
    # windows are batched (~5e-5), and the two paths batch differently
    fp32 = ("--precision", "fp32")
    assert tag(library.root, "--ckpt", ckpt, "--out", plain, "--workers", 0, "--quiet", *fp32) == 1
    args = (library.root, "--ckpt", ckpt, "--out", ray_csv, "--engine", "ray", "--quiet", *fp32)
    assert tag(*args) == 1  # the bad files failed; the run went on

    table = pq.read_table(tmp_path / "ray" / "tags.parquet").to_pandas()
    expected = pd.read_csv(plain)
    assert list(table.columns) == list(expected.columns)
    assert sorted(table.path) == sorted(map(str, library.good))  # each good file once
    merged = expected.merge(table, on="path", suffixes=("_tag", "_ray"))
    assert len(merged) == len(library.good)
    for column in [*LABELS, "duration", "size", "mtime_ns"]:
        np.testing.assert_allclose(merged[f"{column}_ray"], merged[f"{column}_tag"], atol=1e-5)
    assert (merged.genres_ray.fillna("") == merged.genres_tag.fillna("")).all()
    written = pd.read_csv(ray_csv)  # tag's CSV format, from the Parquet rows
    assert list(written.columns) == list(expected.columns)
    assert written.sort_values("path").path.tolist() == sorted(expected.path)

    ray_errors = pd.read_csv(tmp_path / "ray" / "tags.errors.csv")
    tag_errors = pd.read_csv(tmp_path / "plain.errors.csv")
    assert list(ray_errors.columns) == list(tag_errors.columns) == ["path", "error"]
    assert sorted(map(tuple, ray_errors.values)) == sorted(map(tuple, tag_errors.values))
    assert sorted(ray_errors.path) == sorted(map(str, library.bad))

    changed = library.root / "Jazz" / "phone.wav"
    write_audio(changed, 3.25, 8_000)
    assert tag(*args) == 1  # the failures are tried again, the changed file too, no other
    assert len(parts(tmp_path / "ray" / "tags.parquet")) == len(library.good) + 1
    newest = results.read(str(tmp_path / "ray" / "tags.parquet")).to_pandas().set_index("path")
    assert len(newest) == len(library.good)
    row = newest.loc[str(changed.resolve())]
    assert (row["size"], row["mtime_ns"]) == file_key(changed)
    assert row.duration == pytest.approx(3.25, abs=0.01)
    assert pd.read_csv(ray_csv).set_index("path").loc[str(changed.resolve()), "duration"] == (
        pytest.approx(3.25, abs=0.01)
    )


@pytest.mark.usefixtures("local_ray")
def test_killed_decode_worker_and_actor_lose_and_repeat_nothing(
    ckpt: Path, faults: Path, tmp_path: Path
) -> None:
    tracks = make_tracks(tmp_path / "music", 12)
    listed = tmp_path / "list.txt"  # half the files given as file:// URIs in a list
    listed.write_text("".join(f"{p.resolve().as_uri()}\n" for p in tracks[6:]))
    (faults / "die-decoding").write_text(tracks[2].name)
    (faults / "die-scoring").write_text(tracks[4].name)
    out = tmp_path / "tags.parquet"
    try:
        code = tag(*tracks[:6], listed, "--ckpt", ckpt, "--out", out, "--engine", "ray", "--quiet")
    finally:
        (faults / "die-decoding").unlink()
        (faults / "die-scoring").unlink()
    assert (faults / "died-decoding").exists() and (faults / "died-scoring").exists()
    assert code == 0
    rows = parts(out)
    expected = [str(p) for p in tracks[:6]] + [p.resolve().as_uri() for p in tracks[6:]]
    assert sorted(rows.path) == sorted(expected)  # every file, exactly once
    sizes = dict(zip(rows.path, rows["size"], strict=True))
    assert all(sizes[str(p)] == p.stat().st_size for p in tracks[:6])


@pytest.mark.usefixtures("local_ray")
def test_stopped_run_resumes(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracks = make_tracks(tmp_path / "music", 10)
    out = tmp_path / "tags.parquet"
    args = (tmp_path / "music", "--ckpt", ckpt, "--out", out, "--engine", "ray", "--quiet")
    monkeypatch.setattr(run, "FILES_PER_CALL", 2)
    monkeypatch.setattr(run, "ROWS_PER_PART", 2)
    write = results.Catalogue.write

    def stop_after_one(self: results.Catalogue, rows: dict) -> int:
        if self.number >= 1:
            raise KeyboardInterrupt  # Ctrl-C after the first part
        return write(self, rows)

    monkeypatch.setattr(results.Catalogue, "write", stop_after_one)
    assert tag(*args) == 130
    first = parts(out)
    assert 0 < len(first) < len(tracks)

    monkeypatch.setattr(results.Catalogue, "write", write)
    assert tag(*args) == 0
    rows = parts(out)
    assert sorted(rows.path) == sorted(map(str, tracks))  # the rest, none twice
    assert set(first.path) <= set(rows.path)


# -- without Ray ---------------------------------------------------------------------------------
def test_file_lists_and_uris(tmp_path: Path) -> None:
    import pyarrow as pa

    tracks = make_tracks(tmp_path / "music", 4)
    (tmp_path / "music" / ".hidden.wav").write_bytes(tracks[0].read_bytes())
    (tmp_path / "music" / "notes.txt").write_text("not audio")
    text = tmp_path / "list.txt"
    text.write_text(f"# two files\n{tracks[0]}\n\n{tracks[1].as_uri()}\n")
    table = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [str(tracks[2]), str(tracks[0])]}), table)
    found = list_files([str(text), str(table), (tmp_path / "music").as_uri()])
    assert [e.path for e in found] == [
        str(tracks[0]),
        tracks[1].as_uri(),
        str(tracks[2]),
        *[p.as_uri() for p in tracks if p != tracks[1]],  # audio files only, each once
    ]
    assert all(e.key == file_key(tracks[int(e.path[-6:-4])]) for e in found)


@pytest.mark.parametrize(
    ("cpus", "gpus", "flags", "want"),
    [
        (1, 0, {}, (1, 0.5, 0.0, 1, 0.5)),  # a 1-CPU laptop: both stages fit
        (2, 0, {}, (1, 1.0, 0.0, 1, 1.0)),
        (64, 0, {}, (24, 2.0, 0.0, 16, 1.0)),  # CPU inference: 3/4 of the CPUs
        (32, 4, {}, (4, 1.0, 1.0, 28, 1.0)),  # an actor per GPU, the rest decode
        (32, 4, {"actors": 8, "gpus_per_actor": 0.5, "decode_cpus": 12}, (8, 1.0, 0.5, 12, 1.0)),
    ],
)
def test_sizing(cpus: int, gpus: int, flags: dict, want: tuple) -> None:
    args = Namespace(actors=None, actor_cpus=None, gpus_per_actor=None, decode_cpus=None)
    vars(args).update(flags)
    got = run.plan(cpus, gpus, 1000, args)
    assert (got.actors, got.actor_cpus, got.actor_gpus, got.decode_tasks, got.decode_cpus) == want
    assert got.actors * got.actor_cpus + got.decode_tasks * got.decode_cpus <= cpus


def test_output_names() -> None:
    assert run.outputs(Path("out/tags.csv")) == ("out/tags.parquet", "out/tags.csv")
    assert run.outputs(Path("s3://bucket/a/tags.parquet")) == ("s3://bucket/a/tags.parquet", None)
    assert run.outputs(Path("file:///srv/tags.csv")) == (
        "file:///srv/tags.parquet",
        "file:///srv/tags.csv",
    )
    assert (
        results.beside("s3://bucket/tags.parquet", ".errors.csv") == "s3://bucket/tags.errors.csv"
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--engine", "ray", "--write-tags"],
        ["--engine", "ray", "--segments", "1"],
        ["--engine", "ray", "--out", "x.jsonl"],
        ["--actors", "2"],  # without --engine ray
        ["--engine", "ray", "--actors", "0"],
    ],
)
def test_usage_errors(extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = [str(tmp_path), "--ckpt", "x.ckpt"]
    out = (
        []
        if "--out" in extra or "--write-tags" in extra
        else ["--out", str(tmp_path / "t.parquet")]
    )
    assert main([*base, *out, *extra]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one line saying what to do


LIGHTNING = """
import sys, torch
import genretag.cluster.decode, genretag.cluster.predict
print('pytorch_lightning' in sys.modules)
genretag.cluster.predict.load([sys.argv[1]], torch.device('cpu'), 'arithmetic', 'fp32')
print('pytorch_lightning' in sys.modules)
"""


@pytest.fixture(scope="module")
def lightning_in_actor(ckpt: Path) -> list[str]:
    """Whether the actor's modules, then its model load, import Lightning (a fresh process)."""
    done = subprocess.run(
        [sys.executable, "-c", LIGHTNING, str(ckpt)], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_actor_modules_do_not_import_lightning(lightning_in_actor: list[str]) -> None:
    assert lightning_in_actor[0] == "False"


def test_actor_model_load_does_not_import_lightning(lightning_in_actor: list[str]) -> None:
    assert lightning_in_actor[1] == "False"
