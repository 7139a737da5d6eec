"""``genretag tag`` on a generated library: every good file once, every bad one reported, resume
after a real SIGKILL, genre tags written without touching audio or other tags, ensembles."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import mutagen
import numpy as np
import pandas as pd
import psutil
import pytest
import soundfile as sf
import torch

from genretag.data import audio
from genretag.inference import fold_batch_norms
from genretag.io import file_key
from genretag.tagger import filetags
from genretag.tagger.command import main
from genretag.tagger.scan import scan
from genretag.tagger.stream import longest_first
from genretag.task import TaggingTask
from genretag.windows import WindowCutter, window_starts, windows
from tests.conftest import save_model

LABELS = ["Rock", "Electronic", "Hip-Hop", "Old-Time / Historic"]
REPO = Path(__file__).resolve().parents[1]


# -- fixtures ------------------------------------------------------------------------------------
def save_checkpoint(
    path: Path,
    labels: list[str],
    task: str = "multilabel",
    seed: int = 0,
    window: float = 1.0,
    pad_mode: str = "zero",
) -> Path:
    """A real Lightning checkpoint of a tiny TaggingTask (random weights)."""
    torch.manual_seed(seed)
    model = TaggingTask(
        labels=labels,
        task=task,
        window_seconds=window,
        pad_mode=pad_mode,
        channels=(4, 8, 8, 8),
        gru_hidden=8,
        gru_layers=1,
        spec_augment=False,
    )
    return save_model(model, path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", LABELS)


def write_audio(
    path: Path, seconds: float, sr: int, channels: int = 1, freq: float = 440.0
) -> None:
    """A tone with a little noise in the format of ``path``'s extension."""
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    t = np.arange(round(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    data = np.repeat(x[:, None], channels, 1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".m4a":
        write_m4a(path, data[:, 0], sr)
    elif path.suffix == ".opus":
        sf.write(path, data, sr, format="OGG", subtype="OPUS")
    else:
        sf.write(path, data, sr)


def write_m4a(path: Path, mono: np.ndarray, sr: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(mono[None]), format="fltp", layout="mono"
        )
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@dataclass
class Library:
    root: Path
    good: dict[Path, float] = field(default_factory=dict)  # resolved path -> duration (s)
    bad: list[Path] = field(default_factory=list)


GOOD = [  # (relative path, seconds, sample rate, channels)
    ("Rock/Ünïcødé 曲 01.mp3", 2.5, 44_100, 2),
    ("Rock/deep/nested/track.flac", 1.5, 96_000, 1),
    ("Jazz/quiet night.ogg", 1.2, 22_050, 2),
    ("Jazz/phone.wav", 2.0, 8_000, 1),
    ("Jazz/clip.wav", 0.2, 48_000, 2),
]


def make_library(tmp: Path) -> Library:
    """Nested folders, unicode names, MP3/FLAC/OGG/WAV at 8-96 kHz, a 0.2 s clip, silence, an
    empty file, a truncated file, random bytes named .ogg, text named .flac, symlinked folders
    (one back to a parent: a loop), hidden and non-audio files."""
    lib = Library(tmp / "library")
    for i, (name, seconds, sr, channels) in enumerate(GOOD):
        write_audio(lib.root / name, seconds, sr, channels, freq=220.0 * (i + 1))
        lib.good[(lib.root / name).resolve()] = seconds
    silence = lib.root / "silence.flac"
    sf.write(silence, np.zeros(16_000, np.float32), 16_000)
    lib.good[silence.resolve()] = 1.0
    outside = tmp / "elsewhere" / "extra.mp3"  # reached only through a symlinked folder,
    write_audio(outside, 1.0, 32_000, 1)  # so it is known by its path in the library
    lib.good[lib.root / "more" / "extra.mp3"] = 1.0
    (lib.root / "more").symlink_to(outside.parent, target_is_directory=True)
    (lib.root / "Jazz" / "again").symlink_to(lib.root / "Jazz", target_is_directory=True)
    (lib.root / "Rock" / "deep" / "nested" / "up").symlink_to("../..", target_is_directory=True)
    bad = lib.root / "bad"
    bad.mkdir()
    (bad / "empty.mp3").write_bytes(b"")
    write_audio(tmp / "whole.flac", 2.0, 44_100, 2)
    data = (tmp / "whole.flac").read_bytes()
    (bad / "truncated.flac").write_bytes(data[: len(data) // 2])
    (bad / "random.ogg").write_bytes(np.random.default_rng(0).bytes(4000))
    (bad / "text.flac").write_text("not audio\n" * 20)
    lib.bad = [
        (bad / n).resolve() for n in ("empty.mp3", "truncated.flac", "random.ogg", "text.flac")
    ]
    write_audio(lib.root / ".hidden.mp3", 0.5, 16_000)
    write_audio(lib.root / ".cache" / "x.wav", 0.5, 16_000)
    (lib.root / "notes.txt").write_text("hello")
    (lib.root / "Jazz" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    return lib


@pytest.fixture
def library(tmp_path: Path) -> Library:
    return make_library(tmp_path)


def run(*args: object) -> int:
    return main([str(a) for a in args])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- scan and windows ----------------------------------------------------------------------------
def test_scan_finds_each_audio_file_once(library: Library) -> None:
    found = scan([str(library.root)])
    assert sorted(found) == sorted([*library.good, *library.bad])
    jazz = scan([str(library.root / "Jazz" / "*.wav"), str(library.root / "Jazz")])
    assert sorted(p.name for p in jazz) == ["clip.wav", "phone.wav", "quiet night.ogg"]


def test_workers_start_the_longest_files_first(tmp_path: Path) -> None:
    """With several workers the largest files are claimed first, so the library does not end
    with one worker decoding a long track alone; equal sizes keep their order, and a file that
    vanished since the scan goes last (decoding it reports it)."""
    sizes = {"a.mp3": 10, "b.mp3": 300, "c.mp3": 10, "d.mp3": 40}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"\0" * size)
    files = [tmp_path / n for n in ["gone.mp3", *sizes]]
    assert [p.name for p in longest_first(files)] == [
        "b.mp3", "d.mp3", "a.mp3", "c.mp3", "gone.mp3"
    ]  # fmt: skip


@pytest.mark.parametrize("hop", [16, 10, 25])
def test_streamed_windows_equal_the_windows_of_the_whole_clip(hop: int) -> None:
    """``tag`` cuts a stream block by block into exactly the windows ``test`` cuts a clip into."""
    window = 16
    for length in [1, 5, 16, 17, 40, 48, 100]:
        x = np.arange(1, length + 1, dtype=np.float32)
        whole = windows(x, window, hop)
        for cuts in ([], [3, 7, 20, 21], list(range(1, length))):  # any block boundaries
            cutter = WindowCutter(window, hop)
            streamed = [w.copy() for b in np.array_split(x, cuts) for w in cutter.feed(b)]
            streamed += [w.copy() for w in cutter.finish()]
            assert np.array_equal(np.stack(streamed), whole), (length, cuts)
            assert cutter.starts == window_starts(length, window, hop)
        starts = [int(w[0]) - 1 for w in whole]
        assert all(len(w) == window for w in whole)
        if length <= window:
            assert len(whole) == 1 and whole[0][length:].sum() == 0  # one zero-padded window
        else:  # every sample covered, the last window ends at the end, none is padded
            assert whole[-1][-1] == length and starts[-1] == length - window
            assert all(b - a == hop for a, b in zip(starts[:-2], starts[1:-1], strict=True))
            assert hop >= window or all(w.min() > 0 for w in whole)


# -- the library ---------------------------------------------------------------------------------
def test_tag_library_csv(
    library: Library, ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out" / "tags.csv"
    fp32 = ("--precision", "fp32")  # bf16's last digits depend on how windows are batched
    assert run(library.root, "--ckpt", ckpt, "--out", out, "--workers", 2, "--quiet", *fp32) == 1
    err = caplog.text  # logged to stderr by the CLI
    df = pd.read_csv(out)
    assert sorted(df.path) == sorted(map(str, library.good))
    for path, seconds in library.good.items():
        row = df[df.path == str(path)].iloc[0]
        assert row.duration == pytest.approx(seconds, abs=0.01)
        assert row["size"] == path.stat().st_size
        assert row.top1 in LABELS and row.top1_score == max(row[label] for label in LABELS)
    scores = df[LABELS].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    errors = pd.read_csv(tmp_path / "out" / "tags.errors.csv")
    assert sorted(errors.path) == sorted(map(str, library.bad))
    assert all(str(p) in err for p in library.bad)
    assert "4 FAILED" in err

    # the same scores from one process, and a re-run tags nothing again
    again = tmp_path / "again.csv"
    assert run(library.root, "--ckpt", ckpt, "--out", again, "--workers", 0, "--quiet", *fp32) == 1
    merged = df.merge(pd.read_csv(again), on="path")
    np.testing.assert_allclose(
        merged[[f"{g}_x" for g in LABELS]], merged[[f"{g}_y" for g in LABELS]], atol=2e-5
    )
    before = out.read_bytes()
    assert run(library.root, "--ckpt", ckpt, "--out", out, "--workers", 0, "--quiet") == 1
    assert out.read_bytes() == before


def test_changed_file_is_tagged_again(library: Library, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "tags.csv"
    assert run(library.root / "Rock", "--ckpt", ckpt, "--out", out, "--workers", 0) == 0
    changed = library.root / "Rock" / "deep" / "nested" / "track.flac"
    write_audio(changed, 3.25, 44_100)
    assert run(library.root / "Rock", "--ckpt", ckpt, "--out", out, "--workers", 0) == 0
    df = pd.read_csv(out)
    assert len(df) == 2 and df.path.is_unique
    assert df.set_index("path").loc[str(changed.resolve()), "duration"] == pytest.approx(
        3.25, abs=0.01
    )


def test_jsonl_top_k_threshold_and_segments(library: Library, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    args = ["--ckpt", ckpt, "--out", out, "--top-k", 2, "--threshold", 0.3, "--segments", 0.5]
    assert run(library.root / "Rock", library.root / "Jazz", *args, "--workers", 0) == 0
    rows = pd.read_json(out, lines=True)
    assert len(rows) == 5
    for row in rows.itertuples():
        assert set(row.scores) == set(LABELS)
        assert 1 <= len(row.genres) <= 2 and all(g["score"] >= 0.3 for g in row.genres)
    timelines = {
        t["path"]: t
        for t in map(json.loads, (tmp_path / "tags.segments.jsonl").read_text().splitlines())
    }
    assert set(timelines) == set(rows.path)
    for row in rows.itertuples():
        timeline = timelines[row.path]
        samples = round(row.duration * 16_000)
        expected = 1 + max(0, -(-(samples - 16_000) // 8_000))  # 1 s windows every 0.5 s
        assert len(timeline["start"]) == len(timeline["scores"]) == expected
        starts = window_starts(samples, 16_000, 8_000)  # the last one ends at the end
        assert timeline["start"] == [round(s / 16_000, 3) for s in starts]
        mean = np.mean(timeline["scores"], axis=0)  # the track score is the mean of the windows
        np.testing.assert_allclose(mean, [row.scores[g] for g in timeline["labels"]], atol=1e-4)

    peak = tmp_path / "max.jsonl"  # --aggregate max: the track score is the highest window's
    assert (
        run(
            library.root / "Jazz",
            *args[:2],
            "--out",
            peak,
            "--aggregate",
            "max",
            "--hop",
            0.5,
            "--workers",
            0,
        )
        == 0
    )
    for row in pd.read_json(peak, lines=True).itertuples():
        highest = np.max(timelines[row.path]["scores"], axis=0)
        np.testing.assert_allclose(highest, [row.scores[g] for g in LABELS], atol=1e-5)


def test_multiclass_segments_write_srt(library: Library, tmp_path: Path) -> None:
    events = ["Bark", "Meow", "Applause"]
    ckpt = save_checkpoint(tmp_path / "events.ckpt", events, task="multiclass")
    out = tmp_path / "events.csv"
    assert (
        run(library.root / "Jazz", "--ckpt", ckpt, "--out", out, "--segments", 0.25, "--workers", 0)
        == 0
    )
    df = pd.read_csv(out)
    np.testing.assert_allclose(df[events].sum(axis=1), 1.0, atol=1e-4)  # softmax
    srts = sorted((tmp_path / "events.srt").glob("*.srt"))
    assert len(srts) == 3
    for srt in srts:
        cues = srt.read_text().strip().split("\n\n")
        assert all(
            c.splitlines()[0] == str(i + 1) and c.splitlines()[2] in events
            for i, c in enumerate(cues)
        )
        assert cues[0].splitlines()[1].startswith("00:00:00,000 --> ")


# -- resume after kill -9 ------------------------------------------------------------------------
SLOW_MAIN = (
    "import sys, time\n"
    "from genretag.inference import Predictor\n"
    "from genretag.tagger import command\n"
    "call = Predictor.window_probabilities\n"
    "Predictor.window_probabilities = lambda self, a: (time.sleep(0.3), call(self, a))[1]\n"
    "sys.exit(command.main(sys.argv[1:]))\n"
)


def test_resume_after_sigkill(
    library: Library, ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "tags.csv"
    args = [str(library.root), "--ckpt", str(ckpt), "--out", str(out), "--batch-size", "1"]
    cmd = [sys.executable, "-c", SLOW_MAIN, *args, "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_bytes().splitlines()) >= 3:  # header + 2 rows
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers  # the decoding worker
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=20)  # orphaned workers notice and exit
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
        for worker in workers:
            if worker.is_running():
                worker.kill()
    rows_before = pd.read_csv(out)
    assert 2 <= len(rows_before) < len(library.good)
    with open(out, "a") as handle:  # and a torn last write, as a kill in mid-write leaves it
        handle.write(f"{library.root}/Rock/half,1.0,12")
    assert run(*args, "--workers", "0", "--quiet") == 1
    df = pd.read_csv(out)
    assert sorted(df.path) == sorted(map(str, library.good))  # each good file exactly once
    kept = df.set_index("path").loc[rows_before.path].reset_index()
    pd.testing.assert_frame_equal(kept, rows_before)  # not tagged twice
    assert f"{len(rows_before)} already done" in caplog.text


# -- writing genre tags --------------------------------------------------------------------------
TAGGED = ["a.mp3", "b.flac", "c.ogg", "d.opus", "e.wav", "f.m4a", "g.mp3"]


def make_tagged(root: Path) -> list[Path]:
    """One file per format, with a title and artist; a.mp3 (ID3v2.3) already has a genre."""
    paths = []
    for i, name in enumerate(TAGGED):
        path = root / name
        write_audio(path, 1.0, 48_000 if name.endswith(".opus") else 44_100, 2 if i % 2 else 1)
        tagged = mutagen.File(path)
        if tagged.tags is None:
            tagged.add_tags()
        if isinstance(tagged.tags, mutagen.id3.ID3):
            tagged.tags.add(mutagen.id3.TIT2(encoding=3, text=f"Title {i}"))
            tagged.tags.add(mutagen.id3.TPE1(encoding=3, text="Artist"))
            if name == "a.mp3":
                tagged.tags.add(mutagen.id3.TCON(encoding=3, text="Jazz"))
                tagged.save(v2_version=3)
                paths.append(path.resolve())
                continue
        elif isinstance(tagged, mutagen.mp4.MP4):
            tagged.tags["\xa9nam"], tagged.tags["\xa9ART"] = [f"Title {i}"], ["Artist"]
        else:
            tagged.tags["TITLE"], tagged.tags["ARTIST"] = [f"Title {i}"], ["Artist"]
        tagged.save()
        paths.append(path.resolve())
    return paths


def read_genres(path: Path) -> list[str]:
    tags = mutagen.File(path).tags
    if isinstance(tags, mutagen.id3.ID3):
        return [g for frame in tags.getall("TCON") for g in frame.text]
    if isinstance(tags, mutagen.mp4.MP4Tags):
        return list(tags.get("\xa9gen", []))
    return list(tags.get("genre", []))


def other_tags(path: Path) -> list[str]:
    lines = mutagen.File(path).tags.pprint().splitlines()
    return sorted(
        line for line in lines if line.split("=")[0].lower() not in ("tcon", "genre", "\xa9gen")
    )


def native(path: Path) -> np.ndarray:
    return audio.decode(path, sr=audio.info(path).sample_rate)


def test_write_tags_dry_run_then_merge(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture
) -> None:
    paths = make_tagged(tmp_path / "lib")
    before = {p: (sha(p), native(p), other_tags(p)) for p in paths}
    out = tmp_path / "tags.csv"
    args = [
        tmp_path / "lib",
        "--ckpt",
        ckpt,
        "--out",
        out,
        "--write-tags",
        "--mode",
        "merge",
        "--top-k",
        2,
    ]

    assert run(*args, "--dry-run", "--workers", 0, "--quiet") == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(paths) and all(sha(p) == before[p][0] for p in paths)
    assert any(line.startswith(f"{paths[0]}: Jazz -> Jazz; ") for line in printed)

    assert (
        run(*args, "--workers", 0, "--quiet") == 0
    )  # written from the scores stored by the dry run
    df = pd.read_csv(out).set_index("path")
    for path in paths:
        expected = ["Jazz"] if path.name == "a.mp3" else []
        expected += list(df.loc[str(path), ["top1", "top2"]])
        assert read_genres(path) == expected, path.name
        assert np.array_equal(native(path), before[path][1]), path.name
        assert other_tags(path) == before[path][2], path.name
        assert tuple(df.loc[str(path), ["size", "mtime_ns"]]) == file_key(path)
    assert not list((tmp_path / "lib").glob(".*"))  # no temporary file left behind

    now = {p: sha(p) for p in paths}
    assert run(*args, "--workers", 0, "--quiet") == 0  # nothing left to do or to change
    assert {p: sha(p) for p in paths} == now and len(pd.read_csv(out)) == len(paths)


def test_write_tags_skip_and_overwrite(tmp_path: Path, ckpt: Path) -> None:
    paths = make_tagged(tmp_path / "lib")
    args = [
        tmp_path / "lib",
        "--ckpt",
        ckpt,
        "--write-tags",
        "--top-k",
        1,
        "--workers",
        0,
        "--quiet",
    ]
    assert run(*args, "--mode", "skip") == 0
    assert read_genres(paths[0]) == ["Jazz"]
    assert all(len(read_genres(p)) == 1 for p in paths)
    assert run(*args, "--mode", "overwrite", "--out", tmp_path / "t.jsonl") == 0
    rows = pd.read_json(tmp_path / "t.jsonl", lines=True).set_index("path")
    assert all(read_genres(p) == [rows.loc[str(p), "genres"][0]["label"]] for p in paths)


def test_failed_tag_write_leaves_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_tagged(tmp_path)[1]
    original = sha(path)
    monkeypatch.setattr(filetags, "_audio_digest", lambda p: (0, str(p)))  # "the audio changed"
    with pytest.raises(filetags.TagWriteError, match="audio changed"):
        filetags.write_genres(path, ["Rock"], "overwrite")
    assert sha(path) == original and sorted(p.name for p in tmp_path.iterdir()) == sorted(TAGGED)
    text = tmp_path / "notes.flac"
    text.write_text("not audio")
    with pytest.raises(filetags.TagWriteError, match="cannot read tags"):
        filetags.write_genres(text, ["Rock"], "overwrite")


# -- models --------------------------------------------------------------------------------------
def test_ensemble_averages_by_label(library: Library, tmp_path: Path) -> None:
    a = save_checkpoint(tmp_path / "a.ckpt", LABELS, seed=1)
    b = save_checkpoint(tmp_path / "b.ckpt", LABELS[::-1], seed=2)  # same labels, other order
    folder = library.root / "Jazz"
    scores = {}
    for name, ckpts in [("a", [a]), ("b", [b]), ("arithmetic", [a, b]), ("geometric", [a, b])]:
        out = tmp_path / f"{name}.csv"
        extra = ["--ensemble", name] if len(ckpts) > 1 else []
        assert (
            run(
                folder,
                *[x for c in ckpts for x in ("--ckpt", c)],
                "--out",
                out,
                *extra,
                "--workers",
                0,
            )
            == 0
        )
        scores[name] = pd.read_csv(out).set_index("path").sort_index()[LABELS].to_numpy()
    np.testing.assert_allclose(scores["arithmetic"], (scores["a"] + scores["b"]) / 2, atol=2e-5)
    np.testing.assert_allclose(scores["geometric"], np.sqrt(scores["a"] * scores["b"]), atol=5e-5)


@pytest.mark.parametrize("content", ["text", "dict", "window"])
def test_not_a_genretag_checkpoint(
    content: str, library: Library, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.ckpt"
    if content == "text":
        bad.write_text("hello\n")
    elif content == "dict":
        torch.save({"state_dict": {}, "epoch": 3}, bad)
    else:  # a valid checkpoint that cannot join this ensemble
        save_checkpoint(bad, LABELS, window=2.0)
    ckpts = ["--ckpt", ckpt, "--ckpt", bad] if content == "window" else ["--ckpt", bad]
    assert run(library.root, *ckpts, "--out", tmp_path / "x.csv") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genretag tag: error:") and "\n" not in err and "bad.ckpt" in err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--out", "x.txt"],
        ["--out", "x.csv", "--top-k", "0"],
        ["--out", "x.csv", "--bogus"],
        ["--dry-run", "--out", "x.csv"],
        [],
    ],
)
def test_usage_errors(
    args: list[str], library: Library, ckpt: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run(library.root, "--ckpt", ckpt, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genretag tag: error:") and "\n" not in err


def test_help_shows_examples(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    assert "--segments 1.0" in capsys.readouterr().out


def test_a_second_run_on_the_same_out_is_refused(
    library: Library, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tags.csv"
    # another run: the same lock genretag.io.exclusive takes
    holder = "import filelock, sys, time\nlock = filelock.FileLock(sys.argv[1])\nlock.acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path / ".tags.csv.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert run(library.root / "Jazz", "--ckpt", ckpt, "--out", out, "--workers", 0) == 2
        assert "another genretag run is writing it" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert run(library.root / "Jazz", "--ckpt", ckpt, "--out", out, "--workers", 0) == 0


def test_inference_optimisations_keep_the_outputs() -> None:
    """BatchNorm folded into the convs and channels-last weights: the same logits."""
    torch.manual_seed(0)
    model = TaggingTask(
        labels=LABELS, window_seconds=1.0, channels=(4, 8, 8, 8), gru_hidden=8
    ).eval()
    for norm in model.modules():  # statistics as after training
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2.0)
    audio_batch = torch.randn(3, 16_000)
    with torch.inference_mode():
        expected = model(audio_batch)
        fast = fold_batch_norms(model).to(memory_format=torch.channels_last)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.trunk.convs.modules())
        torch.testing.assert_close(fast(audio_batch), expected, atol=1e-5, rtol=1e-5)
