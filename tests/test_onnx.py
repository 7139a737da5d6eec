"""``--precision onnx``: the trunk in ONNX Runtime scores what torch fp32 scores, in the main
process and in the workers that score on the CPU; ``auto`` falls back to torch when a trunk cannot
be exported, and a missing ONNX Runtime is a one-line error that says what to install."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from genretag import onnx_trunk
from genretag.inference import load_predictor
from genretag.onnx_trunk import OnnxTrunk
from genretag.tagger.command import main as tag_main
from tests.conftest import write_mp3
from tests.test_precision import save_musicnn
from tests.test_tagging import save_checkpoint

CPU = torch.device("cpu")
LABELS = ["a", "b", "c", "d"]
pytestmark = pytest.mark.skipif(not onnx_trunk.available(), reason="genretag[onnx] not installed")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CRNN and a musicnn network (the published models' trunk), random weights."""
    root = tmp_path_factory.mktemp("onnx")
    return {
        "crnn": save_checkpoint(root / "crnn.ckpt", LABELS, window=3.0),
        "musicnn": save_musicnn(root / "musicnn.ckpt", LABELS),
    }


@pytest.mark.parametrize("model", ["crnn", "musicnn"])
def test_onnx_scores_what_torch_fp32_scores(ckpts: dict[str, Path], model: str) -> None:
    torch.manual_seed(0)
    fp32 = load_predictor([str(ckpts[model])], CPU, precision="fp32")
    onnx = load_predictor([str(ckpts[model])], CPU, precision="onnx")
    assert isinstance(onnx.networks[0].trunk, OnnxTrunk)
    for batch in (1, 3, 8):  # the export's batch size is 2: the others must run too
        t = torch.arange(fp32.window) / fp32.sample_rate
        pitch = 110.0 * 2 ** torch.arange(batch).view(-1, 1)
        audio = 0.5 * torch.sin(2 * torch.pi * pitch * t) + 0.05 * torch.randn(batch, len(t))
        probs, features = fp32.window_outputs(audio)
        got_probs, got_features = onnx.window_outputs(audio)
        if batch > 1:  # the windows are told apart far beyond the tolerance
            assert float((probs[:, 1:] - probs[:, :1]).abs().max()) > 1e-3
        torch.testing.assert_close(got_probs, probs, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_features, features, atol=1e-4, rtol=1e-4)


def _scores(table: Path) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(table.open()))
    return {Path(r["path"]).name: np.array([float(r[label]) for label in LABELS]) for r in rows}


def test_tag_in_onnx_on_two_workers_gives_fp32s_scores(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    """Each worker builds its own session after the fork; its scores are torch fp32's."""
    music = tmp_path / "music"
    music.mkdir()
    for i, seconds in enumerate((2.0, 7.5, 13.0)):
        write_mp3(music / f"{i}.mp3", seconds, 180.0 * (i + 1), sr=44_100, channels=2, seed=i)
    runs = {}
    for precision, workers in (("fp32", "0"), ("onnx", "2")):
        out = tmp_path / f"{precision}.csv"
        args = [str(music), "--ckpt", str(ckpts["crnn"]), "--out", str(out), "--quiet"]
        assert tag_main([*args, "--precision", precision, "--workers", workers]) == 0
        runs[precision] = _scores(out)
    assert sorted(runs["onnx"]) == ["0.mp3", "1.mp3", "2.mp3"]
    for name, scores in runs["fp32"].items():
        np.testing.assert_allclose(runs["onnx"][name], scores, atol=1e-5, rtol=0)


def test_a_trunk_onnx_cannot_run_falls_back_under_auto_and_is_named_when_forced(
    ckpts: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
) -> None:
    def unsupported(trunk, example):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX is not supported")

    monkeypatch.setattr(onnx_trunk, "export", unsupported)
    monkeypatch.setattr(onnx_trunk, "available", lambda: True)
    monkeypatch.setattr("genretag.inference.choose_precision", lambda *a, **k: "onnx")
    with caplog.at_level(logging.WARNING):
        auto = load_predictor([str(ckpts["crnn"])], CPU, precision="auto")
    assert not isinstance(auto.networks[0].trunk, OnnxTrunk)
    assert "aten::fancy" in caplog.text and "torch fp32" in caplog.text
    args = [str(tmp_path), "--ckpt", str(ckpts["crnn"]), "--out", str(tmp_path / "t.csv")]
    assert tag_main([*args, "--precision", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "aten::fancy" in err and "--precision fp32" in err


def test_auto_runs_musicnns_network_in_onnx_and_the_crnn_in_torch(
    ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where auto would run torch fp32 (faked here for a machine with bf16 arithmetic too):
    musicnn's network goes to ONNX Runtime (1.10-1.14x faster), the CRNN stays in torch."""
    monkeypatch.setattr("genretag.system.cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    for model, engine in (("musicnn", OnnxTrunk), ("crnn", torch.nn.Module)):
        auto = load_predictor([str(ckpts[model])], CPU, precision="auto")
        assert isinstance(auto.networks[0].trunk, engine)
        assert engine is OnnxTrunk or not isinstance(auto.networks[0].trunk, OnnxTrunk)


def test_without_onnx_runtime_auto_is_fp32_and_forcing_it_says_what_to_install(
    ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(onnx_trunk, "available", lambda: False)
    monkeypatch.setattr("genretag.system.cpu_flags", lambda: frozenset({"avx2", "fma"}))
    auto = load_predictor([str(ckpts["musicnn"])], CPU, precision="auto")
    assert not isinstance(auto.networks[0].trunk, OnnxTrunk)
    args = [str(tmp_path), "--ckpt", str(ckpts["crnn"]), "--out", str(tmp_path / "t.csv")]
    assert tag_main([*args, "--precision", "onnx"]) == 2
    assert "pip install 'genretag[onnx]'" in capsys.readouterr().err
