"""The decoded-audio cache: same audio as the decoder, bad tracks once, safe concurrent filling."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from genretag.cli import main
from genretag.data import audio, datamodules
from genretag.data.cache import DecodedCache, fill, from_pcm16, to_pcm16
from genretag.data.datasets import ClipList, EvalClips, TrainClips, collate
from tests.conftest import Corpus, fit_args, make_fma, write_mp3

QUANTUM = 1 / 32768  # one int16 step


@pytest.fixture
def mp3(tmp_path: Path) -> Path:
    path = tmp_path / "audio" / "track.mp3"
    write_mp3(path, 4.0, 440.0, seed=1)
    return path


def _no_decoding(*args, **kwargs):
    raise AssertionError("the cache decoded a file it already holds")


def test_cached_audio_is_the_decoders_audio_to_one_int16_step(tmp_path: Path, mp3: Path):
    cache = DecodedCache(tmp_path / "cache", 16_000)
    full = audio.decode(mp3, 16_000)
    np.testing.assert_allclose(cache.decode(mp3), full, atol=QUANTUM)
    pcm = cache.load(mp3)
    assert isinstance(pcm, np.memmap) and pcm.dtype == np.int16 and len(pcm) == len(full)
    crop = cache.random_crop(mp3, 1.5, 0.5)
    start = round(0.5 * (len(full) - 24_000))
    assert crop.dtype == np.float32 and len(crop) == 24_000
    np.testing.assert_allclose(crop, full[start : start + 24_000], atol=QUANTUM)
    assert len(cache.random_crop(mp3, 10.0, 0.3)) == len(full)  # shorter track: callers pad


def test_a_second_read_does_not_decode(tmp_path: Path, mp3: Path, monkeypatch):
    cache = DecodedCache(tmp_path / "cache", 16_000)
    first = cache.decode(mp3)
    monkeypatch.setattr(audio, "decode", _no_decoding)
    np.testing.assert_array_equal(cache.decode(mp3), first)
    assert len(cache.random_crop(mp3, 1.0, 0.9)) == 16_000


def test_the_key_follows_sample_rate_and_file_content(tmp_path: Path, mp3: Path):
    at16, at22 = DecodedCache(tmp_path / "c", 16_000), DecodedCache(tmp_path / "c", 22_050)
    assert at16.folder != at22.folder
    assert len(at22.decode(mp3)) == pytest.approx(4 * 22_050, abs=50)
    before = at16.entry(mp3)
    at16.decode(mp3)
    write_mp3(mp3, 2.0, 880.0, seed=2)  # the track is replaced (another download, a re-encode)
    os.utime(mp3, ns=(1, 1))
    assert at16.entry(mp3) != before
    assert len(at16.decode(mp3)) == pytest.approx(2 * 16_000, abs=50)


def test_a_bad_track_is_recorded_once_and_still_reported(tmp_path: Path, monkeypatch):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"ID3 not really audio\n" * 200)
    cache = DecodedCache(tmp_path / "cache", 16_000)
    with pytest.raises(audio.AudioDecodeError) as first:
        cache.random_crop(bad, 1.0, 0.5)
    record = json.loads(cache.entry(bad).with_suffix(".bad").read_text())
    assert record == {"path": str(bad), "reason": first.value.reason}
    monkeypatch.setattr(audio, "decode", _no_decoding)
    clips = ClipList([str(bad)], ["7"], np.zeros((1, 2), np.float32))
    for dataset in (
        TrainClips(clips, cache, 1.0),
        EvalClips(clips, cache, 1.0),
    ):
        item = dataset[0]
        assert item == {"bad": (str(bad), first.value.reason)}
        assert collate([item])["bad"] == [(str(bad), first.value.reason)]


def test_a_missing_file_is_reported_not_recorded(tmp_path: Path):
    cache = DecodedCache(tmp_path / "cache", 16_000)
    with pytest.raises(audio.AudioDecodeError, match="no such file"):
        cache.decode(tmp_path / "gone.mp3")
    assert not cache.folder.exists()


def test_a_damaged_cache_file_is_decoded_again(tmp_path: Path, mp3: Path):
    cache = DecodedCache(tmp_path / "cache", 16_000)
    good = cache.decode(mp3)
    stored = cache.entry(mp3).with_suffix(".pcm")
    stored.write_bytes(stored.read_bytes()[:1000])  # a crash or a full disk mid-write
    np.testing.assert_array_equal(cache.decode(mp3), good)


def _fill_all(args: tuple[str, list[str]]) -> list[int]:
    root, paths = args
    cache = DecodedCache(root, 16_000)
    return [len(cache.load(p)) for p in paths]


def test_concurrent_writers_never_corrupt(tmp_path: Path):
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / "audio" / f"{i}.mp3"))
        write_mp3(Path(paths[-1]), 1.0 + 0.25 * i, 300.0 + 50 * i, seed=i)
    (tmp_path / "audio" / "junk.mp3").write_bytes(b"\xff\xfb junk" * 100)
    paths.append(str(tmp_path / "audio" / "junk.mp3"))
    root = str(tmp_path / "cache")
    jobs = [(root, paths[:-1][::step]) for step in (1, -1, 1, -1)]
    with ProcessPoolExecutor(4) as pool:
        lengths = list(pool.map(_fill_all, jobs))
    assert lengths[0] == lengths[2] == lengths[1][::-1]
    report = fill(DecodedCache(root, 16_000), paths, workers=3)
    assert report.counts == {"cached": 6, "bad": 1} and list(report.bad) == [paths[-1]]
    leftovers = [
        p for p in Path(root).rglob("*") if p.is_file() and p.suffix not in (".pcm", ".bad")
    ]
    assert leftovers == []
    for path in paths[:-1]:
        np.testing.assert_allclose(
            DecodedCache(root, 16_000).decode(path), audio.decode(path), atol=QUANTUM
        )


def test_pcm16_round_trip_clips_beyond_full_scale():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0, 1e-5], np.float32)
    y = from_pcm16(to_pcm16(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.clip(x, -1.0, 1.0 - QUANTUM), atol=QUANTUM / 2)


def test_every_data_module_takes_cache_dir_and_streams_by_default():
    from jsonargparse import ArgumentParser

    for cls in [datamodules.ClipDataModule, *datamodules.ClipDataModule.__subclasses__()]:
        parser = ArgumentParser()  # as LightningCLI resolves the subclasses' **kwargs
        parser.add_class_arguments(cls, "data")
        assert "cache_dir" in parser.get_defaults().data, cls.__name__
        assert parser.get_defaults().data.cache_dir is None, cls.__name__


def test_fit_fills_the_cache_then_reads_from_it(tmp_path: Path, monkeypatch):
    corpus = make_fma(tmp_path / "fma", {"training": 2, "validation": 1, "test": 1})
    cache_dir = tmp_path / "cache"
    assert main(fit_args(corpus, tmp_path / "run", f"--data.cache_dir={cache_dir}")) == 0
    stored = sorted(cache_dir.rglob("*.pcm"))
    assert len(stored) == 12  # the 8 training and 4 validation tracks; test is not touched
    monkeypatch.setattr(audio, "decode", _no_decoding)
    monkeypatch.setattr(audio, "random_crop", _no_decoding)
    assert main(fit_args(corpus, tmp_path / "again", f"--data.cache_dir={cache_dir}")) == 0


PREPARE_YAML = """
trainer:
  max_epochs: 3
model:
  gru_hidden: 8
data:
  class_path: genretag.data.datamodules.FMADataModule
  init_args:
    meta_dir: {meta}
    audio_dir: {audio}
    window_seconds: 1.0
"""


def _prepare_config(corpus: Corpus, root: Path) -> Path:
    config = root / "prepare.yaml"
    config.write_text(PREPARE_YAML.format(meta=corpus.meta_dir, audio=corpus.audio_dir))
    return config


def test_prepare_decodes_every_split_once_on_all_cores(tmp_path: Path, capsys):
    corpus = make_fma(tmp_path / "fma", {"training": 1, "validation": 1, "test": 1})
    config, cache_dir = _prepare_config(corpus, tmp_path), tmp_path / "cache"
    args = ["prepare", "--config", str(config), f"--data.cache_dir={cache_dir}", "--workers=2"]
    assert main(args) == 0
    assert "12 decoded" in capsys.readouterr().out
    assert len(list(cache_dir.rglob("*.pcm"))) == 12
    assert main([*args, "--no-progress"]) == 0
    assert "12 cached" in capsys.readouterr().out
    # another rate is another cache
    assert main([*args, "--no-progress", "--data.sample_rate=8000"]) == 0
    assert "12 decoded" in capsys.readouterr().out


def test_prepare_reports_bad_tracks_with_exit_code_1(tmp_path: Path, capsys):
    corpus = make_fma(tmp_path / "fma", {"training": 1, "validation": 1, "test": 1})
    corpus.path(corpus.track_ids[0]).write_bytes(b"\x00" * 4000)
    config, cache_dir = _prepare_config(corpus, tmp_path), tmp_path / "cache"
    args = ["prepare", "--config", str(config), f"--data.cache_dir={cache_dir}", "--no-progress"]
    assert main([*args, "--workers=1"]) == 1
    assert "1 bad" in capsys.readouterr().out
    assert len(list(cache_dir.rglob("*.bad"))) == 1


def test_prepare_without_cache_dir_is_a_one_line_error(tmp_path: Path, capsys):
    corpus = make_fma(tmp_path / "fma", {"training": 1, "validation": 1, "test": 1})
    assert main(["prepare", "--config", str(_prepare_config(corpus, tmp_path))]) == 2
    assert "data.cache_dir" in capsys.readouterr().err
