"""Comparing models: every trunk's checkpoint tags files, test reports intervals, per-genre
thresholds from validation drive ``tag --threshold auto``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from genretag.checkpoint import read_checkpoint
from genretag.metrics import best_f1_thresholds
from genretag.network import Network
from genretag.tagger.command import main as tag_main
from genretag.task import TaggingTask
from tests.conftest import save_model, write_mp3

LABELS = ["Rock", "Electronic", "Hip-Hop"]
SMALL = {
    "genretag.models.fcn.FCN": {"channels": [4, 8, 8]},
    "genretag.models.musicnn.Musicnn": {},
    "genretag.models.resnet.ShortChunkResNet": {"channels": 4},
}


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("songs")
    paths = [root / f"song{i}.mp3" for i in range(3)]
    for i, path in enumerate(paths):
        write_mp3(path, 2.5 + i, 330.0 * (i + 1), seed=i)
    return paths


@pytest.mark.parametrize("class_path", SMALL, ids=lambda p: p.rsplit(".", 1)[1])
def test_each_trunk_round_trips_through_tag(
    class_path: str, songs: list[Path], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    spec = {"class_path": class_path, "init_args": SMALL[class_path]}
    model = TaggingTask(labels=LABELS, window_seconds=1.0, trunk=spec, spec_augment=False)
    ckpt = save_model(model, tmp_path / "trunk.ckpt")
    assert read_checkpoint(ckpt)["hyper_parameters"]["trunk"] == spec  # plain data
    loaded = Network.load(str(ckpt))
    assert type(loaded.trunk) is type(model.trunk)
    audio = torch.randn(2, 16_000)
    torch.testing.assert_close(loaded(audio), model.eval()(audio))
    out = tmp_path / "tags.csv"
    assert tag_main([*map(str, songs), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert sorted(table.path) == sorted(map(str, songs))
    assert table[LABELS].to_numpy().min() > 0 and table[LABELS].to_numpy().max() < 1


def test_best_f1_thresholds_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.2], [0.7, 0.3], [0.4, 0.1], [0.2, 0.8]])
    targets = torch.tensor([[1, 0], [1, 0], [0, 0], [0, 1]])
    # label 0: cutting at 0.7 catches both positives and nothing else (F1 = 1)
    # label 1: only the 0.8 clip is positive (F1 = 1 at 0.8)
    assert best_f1_thresholds(probs, targets).tolist() == pytest.approx([0.7, 0.8])
    # a label without positives keeps the default
    assert best_f1_thresholds(probs, torch.zeros(4, 2)).tolist() == [0.5, 0.5]


def test_threshold_auto_uses_each_genres_validation_threshold(
    songs: list[Path], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = TaggingTask(
        labels=LABELS, window_seconds=1.0, channels=(4, 8, 8, 8), gru_hidden=8, gru_layers=1
    )
    probe = Network.load(str(save_model(model, tmp_path / "probe.ckpt")))
    with torch.inference_mode():
        scores = probe.head.probabilities(probe(torch.zeros(1, 16_000)))[0]
    # thresholds just below/above what the model gives: Rock always in, the others never
    model.label_thresholds.copy_(torch.tensor([0.0, 1.0, 1.0]))
    ckpt = save_model(model, tmp_path / "thresholds.ckpt")
    out = tmp_path / "auto.csv"
    args = [*map(str, songs), "--ckpt", str(ckpt), "--out", str(out), "--threshold", "auto"]
    assert tag_main(args) == 0
    assert set(pd.read_csv(out)["genres"]) == {"Rock"}
    assert float(scores.min()) > 0  # the other labels had scores; the thresholds kept them out
    bad = [*map(str, songs), "--ckpt", str(ckpt), "--out", str(out), "--threshold", "high"]
    assert tag_main(bad) == 2
