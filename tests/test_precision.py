"""``--precision``: every precision tags a file end to end, and bf16/int8 stay close to fp32."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from genretag.inference import PRECISIONS, for_inference, load_predictor
from genretag.tagger.command import main
from genretag.task import TaggingTask

LABELS = ["Rock", "Electronic", "Hip-Hop", "Folk", "Jazz", "Pop"]
TOLERANCE = 0.02  # largest probability difference from fp32 on any window


def _signal(seconds: float, seed: int, sr: int = 16_000) -> np.ndarray:
    """Chords, a sweep and noise bursts: (T,) float32, peak about 0.7."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    x = sum(0.15 * np.sin(2 * np.pi * root * r * t) for r in (1, 1.25, 1.5))
    x += 0.1 * np.sin(2 * np.pi * (200 + 800 * t / seconds) * t)
    x += 0.2 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0.7)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = TaggingTask(
        labels=LABELS, window_seconds=1.0, channels=(8, 16, 16, 16), gru_hidden=16, gru_layers=1
    )
    with torch.no_grad():  # spread the random model's outputs away from 0.5, as training does
        for layer in model.head.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(10.0)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("ckpt") / "small.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_precision_stays_close_to_fp32(ckpt: Path, precision: str) -> None:
    audio = torch.from_numpy(np.stack([_signal(1.0, seed) for seed in range(8)]))
    cpu = torch.device("cpu")
    reference = load_predictor([str(ckpt)], cpu).window_probabilities(audio)[0]
    got = load_predictor([str(ckpt)], cpu, precision=precision).window_probabilities(audio)[0]
    assert got.shape == reference.shape == (8, len(LABELS))
    assert float(reference.std(0).max()) > 0.01  # the signals are told apart: not a vacuous check
    assert float((got - reference).abs().max()) <= TOLERANCE


def test_int8_quantizes_the_gru(ckpt: Path) -> None:
    from genretag.network import Network

    model = for_inference(Network.load(str(ckpt)), torch.device("cpu"), "int8")
    assert "quantized" in type(model.trunk.gru).__module__


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tag_runs_at_each_precision(ckpt: Path, tmp_path: Path, precision: str) -> None:
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", _signal(2.5, seed=i), 16_000)
    out = tmp_path / f"tags-{precision}.csv"
    args = [str(tmp_path), "--ckpt", str(ckpt), "--out", str(out), "--quiet"]
    assert main([*args, "--precision", precision, "--workers", "0"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(Path(r["path"]).name for r in rows) == ["0.wav", "1.wav"]
    assert all(r["top1"] in LABELS for r in rows)


def test_unknown_precision_is_a_usage_error(ckpt: Path, tmp_path: Path) -> None:
    args = [str(tmp_path), "--ckpt", str(ckpt), "--out", str(tmp_path / "t.csv")]
    assert main([*args, "--precision", "fp8"]) == 2
