"""The embedded demo corpus: FMA's exact layout and formats, learnable genres, safe creation."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genretag.data.audio import decode
from genretag.synth import demo
from genretag.synth import music as demo_music

# The first three lines of FMA's real fma_metadata/tracks.csv, byte for byte.
FMA_HEADER = [
    ",album,album,album,album,album,album,album,album,album,album,album,album,album"
    ",artist,artist,artist,artist,artist,artist,artist,artist,artist,artist,artist,artist"
    ",artist,artist,artist,artist,artist,set,set,track,track,track,track,track,track"
    ",track,track,track,track,track,track,track,track,track,track,track,track,track,track",
    ",comments,date_created,date_released,engineer,favorites,id,information,listens"
    ",producer,tags,title,tracks,type,active_year_begin,active_year_end,associated_labels"
    ",bio,comments,date_created,favorites,id,latitude,location,longitude,members,name"
    ",related_projects,tags,website,wikipedia_page,split,subset,bit_rate,comments"
    ",composer,date_created,date_recorded,duration,favorites,genre_top,genres,genres_all"
    ",information,interest,language_code,license,listens,lyricist,number,publisher,tags"
    ",title",
    "track_id" + "," * 52,
]


def _mp3(audio_dir: Path, track_id: int) -> Path:
    return audio_dir / f"{track_id // 1000:03d}" / f"{track_id:06d}.mp3"


def _roots(genres: list[int], taxonomy: pd.DataFrame) -> set[int]:
    return {int(taxonomy.at[g, "top_level"]) for g in genres}


def _mel_filters(sr: int = 16_000, n_fft: int = 512, n_mels: int = 96) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale up to 8 kHz."""
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), n_mels + 2)
    edges = 700 * (10 ** (mel / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def _summary(clip: np.ndarray) -> np.ndarray:
    """Mean and std over time of the 96-band log-mel spectrogram (n_fft 512, hop 256) -> (192,)."""
    frames = np.lib.stride_tricks.sliding_window_view(clip, 512)[::256] * np.hanning(512)
    logmel = np.log(np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ _mel_filters().T + 1e-6)
    return np.concatenate([logmel.mean(axis=0), logmel.std(axis=0)])


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    pos, neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The default demo corpus (seed 0), synthesized once for this module."""
    return demo.ensure_demo(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture(scope="module")
def tracks(corpus: tuple[Path, Path]) -> pd.DataFrame:
    return pd.read_csv(corpus[0] / "tracks.csv", index_col=0, header=[0, 1])


@pytest.fixture(scope="module")
def taxonomy(corpus: tuple[Path, Path]) -> pd.DataFrame:
    return pd.read_csv(corpus[0] / "genres.csv", index_col=0)


@pytest.fixture(scope="module")
def decoded(corpus, tracks) -> dict[int, tuple[int, float, np.ndarray]]:
    """Every track decoded by the project's decoder at 16 kHz: (samples, RMS, log-mel summary)."""
    out = {}
    for track_id in tracks.index:
        clip = decode(_mp3(corpus[1], track_id), sr=16_000)
        assert np.isfinite(clip).all(), track_id
        out[track_id] = (len(clip), float(clip.std()), _summary(clip))
    return out


def test_tracks_csv_has_fmas_exact_header_and_columns(corpus, tracks):
    with open(corpus[0] / "tracks.csv", encoding="utf-8", newline="") as handle:
        assert [handle.readline().rstrip("\n") for _ in range(3)] == FMA_HEADER
    expected = pd.MultiIndex.from_arrays(
        [FMA_HEADER[0].split(",")[1:], FMA_HEADER[1].split(",")[1:]]
    )
    assert tracks.columns.equals(expected)
    assert tracks.index.name == "track_id" and tracks.index.is_unique
    assert tracks[("track", "duration")].dtype.kind == "i"
    assert tracks[("track", "bit_rate")].dtype.kind == "i"


def test_genres_csv_is_the_real_taxonomy(corpus, taxonomy):
    package_copy = resources.files("genretag.data").joinpath("fma_genres.csv").read_bytes()
    assert (corpus[0] / "genres.csv").read_bytes() == package_copy
    assert list(taxonomy.columns) == ["#tracks", "parent", "title", "top_level"]
    assert len(taxonomy) == 163 and (taxonomy.parent == 0).sum() == 16


def test_labels_follow_fma_conventions(tracks, taxonomy):
    genres = tracks[("track", "genres")].map(ast.literal_eval)
    genres_all = tracks[("track", "genres_all")].map(ast.literal_eval)
    for given, everything in zip(genres, genres_all, strict=True):
        ancestors = set()
        for genre in given:
            while genre:
                ancestors.add(genre)
                genre = int(taxonomy.at[genre, "parent"])
        assert set(everything) == ancestors, (given, everything)
    n_roots = genres.map(lambda g: len(_roots(g, taxonomy)))
    top = tracks[("track", "genre_top")]
    one = n_roots == 1
    titles = genres[one].map(lambda g: taxonomy.at[_roots(g, taxonomy).pop(), "title"])
    assert (top[one] == titles).all()
    assert top[~one].isna().all()
    assert top.nunique() >= 6  # root genres
    assert 0.1 <= (n_roots == 2).mean() <= 0.25  # truly multi-label
    assert (genres.map(len) > 0).all()
    assert genres.map(lambda g: any(taxonomy.at[x, "parent"] for x in g)).mean() > 0.5  # sub-genres


def test_splits_and_subsets_are_fma_like(tracks):
    split, subset = tracks[("set", "split")], tracks[("set", "subset")]
    assert set(split) == {"training", "validation", "test"}
    assert 0.7 <= (split == "training").mean() <= 0.85
    assert abs((split == "validation").mean() - (split == "test").mean()) <= 0.05
    for _, group in tracks.groupby(("track", "genre_top")):  # balanced per genre
        assert (group[("set", "split")] != "training").sum() >= 2
    counts = subset.value_counts()
    assert counts["small"] > counts["medium"] > 0 and counts["large"] > 0
    assert tracks[("track", "genre_top")][subset != "large"].notna().all()  # as in FMA


def test_track_ids_are_sparse_over_several_folders(tracks):
    ids = tracks.index.to_numpy()
    assert ids.min() >= 2 and (np.diff(ids) > 0).all()
    assert (np.diff(ids) > 1).any() and len(set(ids // 1000)) >= 10


def test_free_text_round_trips(tracks):
    written = demo.tracks_table(demo.plan(0), 0)
    for column in [("track", "title"), ("artist", "name"), ("artist", "bio")]:
        text = tracks[column].fillna("")
        assert (text == written[column].fillna("")).all(), column
        assert text.str.contains("\n").any() and text.str.contains('"').any(), column
    assert tracks[("track", "title")].str.contains(",").any()


def test_every_track_has_a_44k_stereo_mp3_that_decodes(corpus, tracks, decoded):
    audio_dir = corpus[1]
    assert sorted(audio_dir.rglob("*.mp3")) == sorted(_mp3(audio_dir, t) for t in tracks.index)
    for track_id in tracks.index:
        info = sf.info(_mp3(audio_dir, track_id))
        assert (info.samplerate, info.channels) == (44_100, 2)
        assert info.duration == pytest.approx(demo_music.CLIP_SECONDS, abs=0.05)
        length, rms, _ = decoded[track_id]
        assert length == pytest.approx(16_000 * demo_music.CLIP_SECONDS, abs=100)
        assert 0.01 < rms < 0.5


def test_same_seed_gives_identical_metadata_and_audio(corpus, tracks, tmp_path):
    path = tmp_path / "tracks.csv"
    demo.tracks_table(demo.plan(0), 0).to_csv(path, lineterminator="\n")
    assert path.read_bytes() == (corpus[0] / "tracks.csv").read_bytes()
    for track in demo.plan(0)[:3]:
        _mp3(tmp_path, track.track_id).parent.mkdir(exist_ok=True)
        demo._write_mp3(tmp_path, 0, track)
        assert (
            _mp3(tmp_path, track.track_id).read_bytes()
            == _mp3(corpus[1], track.track_id).read_bytes()
        )
    other = demo.plan(1)
    assert [t.track_id for t in other] != list(tracks.index)


def test_complete_corpus_is_returned_at_once(corpus):
    stamp = (corpus[0] / "tracks.csv").stat().st_mtime_ns
    start = time.perf_counter()
    assert demo.ensure_demo(corpus[0].parent) == corpus
    assert time.perf_counter() - start < 0.5
    assert (corpus[0] / "tracks.csv").stat().st_mtime_ns == stamp


def test_root_genres_are_learnable_from_timbre_alone(tracks, taxonomy, decoded):
    """A linear model on mean log-mel features tags held-out tracks far above chance."""
    x = np.stack([decoded[t][2] for t in tracks.index])
    genres = tracks[("track", "genres")].map(ast.literal_eval)
    roots = sorted(set().union(*(_roots(g, taxonomy) for g in genres)))
    y = np.array([[r in _roots(g, taxonomy) for r in roots] for g in genres])
    train = (tracks[("set", "split")] == "training").to_numpy()
    x = (x - x[train].mean(axis=0)) / (x[train].std(axis=0) + 1e-6)
    w, b = np.zeros((x.shape[1], len(roots))), np.zeros(len(roots))
    for _ in range(300):  # one-vs-rest logistic regression, L2, gradient descent
        grad = 1 / (1 + np.exp(-(x[train] @ w + b))) - y[train]
        w -= 0.1 * (x[train].T @ grad / train.sum() + 0.01 * w)
        b -= 0.1 * grad.mean(axis=0)
    held = ~train
    scores = x[held] @ w + b
    macro_auc = np.mean([_roc_auc(y[held, j], scores[:, j]) for j in range(len(roots))])
    single = held & (y.sum(axis=1) == 1)
    accuracy = (np.argmax(x[single] @ w + b, axis=1) == np.argmax(y[single], axis=1)).mean()
    assert macro_auc >= 0.85, macro_auc
    assert accuracy >= 0.5, accuracy  # chance: 1/8


# ------------------------------------------------------------------ safe creation


FULL_PLAN = demo.plan


def _tiny_plan(seed: int = 0) -> list[demo.DemoTrack]:
    """The first three tracks of the demo: enough to exercise creation, fast."""
    return FULL_PLAN(seed)[:3]


CONCURRENT = """
import sys, time
from pathlib import Path
from genretag.synth import demo
from genretag.synth import music as demo_music

root, log, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
full_plan, synthesize = demo.plan, demo._synthesize
demo.plan = lambda seed=0: full_plan(seed)[:3]

def counted(root, seed):
    with open(log, "a") as handle:
        handle.write("synthesized\\n")
    time.sleep(1.0)  # hold the lock while the other process arrives
    synthesize(root, seed)

demo._synthesize = counted
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
print(*demo.ensure_demo(root))
"""


def test_concurrent_processes_synthesize_once(tmp_path):
    """Two processes (DDP ranks, say) start together: one synthesizes, the other waits."""
    root, log, go = tmp_path / "data", tmp_path / "log.txt", tmp_path / "go"
    command = [sys.executable, "-c", CONCURRENT, str(root), str(log), str(go)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    go.touch()
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] == [str(root / "fma_metadata"), str(root / "fma_demo")]
    assert log.read_text().count("synthesized") == 1
    assert len(list((root / "fma_demo").rglob("*.mp3"))) == 3
    assert not list(root.glob(".demo-*.tmp"))


def test_interrupted_run_is_cleaned_up_and_redone(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(demo, "plan", _tiny_plan)
    root = tmp_path / "data"
    (root / ".demo-killed.tmp" / "fma_demo").mkdir(parents=True)
    (root / "fma_demo" / "000").mkdir(parents=True)  # renamed just before a crash
    with caplog.at_level("INFO", logger="genretag.synth.demo"):
        meta_dir, audio_dir = demo.ensure_demo(root)
    assert "synthesizing the demo corpus in" in caplog.text and "(3 tracks)" in caplog.text
    assert len(pd.read_csv(meta_dir / "tracks.csv", index_col=0, header=[0, 1])) == 3
    assert len(list(audio_dir.rglob("*.mp3"))) == 3
    assert not list(root.glob(".demo-*.tmp"))


def test_foreign_metadata_folder_is_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "plan", _tiny_plan)
    (tmp_path / "fma_metadata").mkdir()
    (tmp_path / "fma_metadata" / "raw_tracks.csv").write_text("mine")
    with pytest.raises(FileExistsError, match="fma_metadata"):
        demo.ensure_demo(tmp_path)
    assert (tmp_path / "fma_metadata" / "raw_tracks.csv").read_text() == "mine"
