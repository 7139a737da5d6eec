"""MusicnnCRNN: musicnn's front and mid-end from its published weights, a GRU trained on top.

The weights come from the installed musicnn package (pip install --no-deps musicnn==0.1.0),
converted once into a temporary folder; tests/data/musicnn_reference.npz holds musicnn's own
log-mel patches and outputs (see tests/test_pretrained.py).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genretag.checkpoint import load_checkpoint
from genretag.cli import main
from genretag.errors import ConfigError
from genretag.models.musicnn_crnn import MUSICNN_LAYERS, MusicnnCRNN
from genretag.models.musicnn_original import FrontBlock
from genretag.network import Network
from genretag.pretrained.clips import reference_clips
from genretag.task import TaggingTask

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"
OVERLAY = Path(__file__).resolve().parents[1] / "configs" / "musicnn_crnn_transfer.yaml"
CRNN_TRUNK = {"class_path": "genretag.models.musicnn_crnn.MusicnnCRNN"}
MUSICNN = {"frontend": "musicnn", "window_seconds": 2.992}  # musicnn-msd's front-end


@pytest.fixture(scope="module")
def msd(tmp_path_factory) -> Path:
    if importlib.util.find_spec("musicnn") is None:
        pytest.skip("musicnn is not installed (pip install --no-deps musicnn==0.1.0)")
    out = tmp_path_factory.mktemp("ckpt") / "msd.ckpt"
    assert main(["pretrained", "musicnn-msd", "--out", str(out)]) == 0
    return out


def _is_musicnn(key: str) -> bool:
    return key.split(".", 1)[0] in MUSICNN_LAYERS


def _randomise_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    """Trained-looking statistics, and negative scales (the fast path's other branch)."""
    for norm in module.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            n = norm.num_features
            norm.weight.data = torch.randn(n, generator=generator)
            norm.bias.data = torch.randn(n, generator=generator)
            norm.running_mean = torch.randn(n, generator=generator)
            norm.running_var = torch.rand(n, generator=generator) + 0.5


@pytest.mark.parametrize("frames", [63, 187, 626], ids=["1 s", "3 s", "10 s"])
def test_eval_equals_the_training_path_with_running_statistics(frames: int) -> None:
    """eval()'s output (FrontBlock's fast path) is what the layers compute in train mode with
    the batch norms' running statistics and no dropout: what a trained model tags with."""
    generator = torch.Generator().manual_seed(frames)
    trunk = MusicnnCRNN(dropout=0.0)
    _randomise_batch_norms(trunk, generator)
    spec = torch.randn(2, 96, frames, generator=generator)
    with torch.no_grad():
        fast = trunk.eval()(spec)
        trunk.train()
        for norm in trunk.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                norm.eval()
        assert all(block.training for block in trunk.modules() if isinstance(block, FrontBlock))
        plain = trunk(spec)
    assert fast.shape == (2, 512) and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_init_from_musicnn_takes_its_front_and_mid_bit_for_bit(msd: Path) -> None:
    labels = ["a", "b", "c"]
    model = TaggingTask(labels, trunk=CRNN_TRUNK, **MUSICNN)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    model.load_trunk(str(msd))
    source = load_checkpoint(msd)["state_dict"]
    after = model.network.state_dict()
    shared = [k for k in after if k.startswith("trunk.") and _is_musicnn(k[6:])]
    assert len(shared) == len([k for k in source if _is_musicnn(k.removeprefix("trunk."))]) > 30
    for key in shared:
        assert torch.equal(after[key], source[key]), key  # weights and batch-norm statistics
    for key in [k for k in after if k not in shared]:  # GRU, attention, head: still new
        assert torch.equal(after[key], before[key]), key

    # Its frame features on musicnn's own log-mels are MusicnnOriginal's, and musicnn's back-end
    # on them gives what musicnn's TensorFlow code gave for these patches.
    original = Network.load(msd).trunk
    trunk = model.trunk.eval()
    with np.load(REFERENCE, allow_pickle=False) as reference:
        clip = next(iter(reference_clips()))
        patches = torch.from_numpy(reference[f"logmel/{clip}"]).transpose(1, 2)  # (P, 96, 187)
        penultimate = torch.from_numpy(reference[f"MSD_musicnn/penultimate/{clip}"])
    with torch.no_grad():
        features = trunk.features(patches)  # (P, 753, 187)
        assert torch.equal(features, original.features(patches))
        assert (original.back_end(features) - penultimate).abs().max() < 1e-3
        assert trunk(patches).shape == (len(patches), trunk.out_features)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"n_mels": 64}, r"n_mels=96 but this model has n_mels=64; set --model.n_mels to 96"),
        ({"frontend": "logmel"}, r"frontend='musicnn' .*set --model.frontend to 'musicnn'"),
        (
            {"trunk": {**CRNN_TRUNK, "init_args": {"filters_scale": 1.0}}},
            r"front.0.conv.weight: 204x1x7x38 in the file vs 128x1x7x38 .*--model.trunk.init_args "
            r"as in its MusicnnOriginal trunk",
        ),
        ({"trunk": {"class_path": "genretag.models.fcn.FCN"}}, r"set --model.trunk to"),
    ],
    ids=["n_mels", "frontend", "filters_scale", "FCN"],
)
def test_init_from_a_mismatch_is_one_line_naming_the_setting(msd, settings, named) -> None:
    model = TaggingTask(["a", "b"], **{**MUSICNN, "trunk": CRNN_TRUNK, **settings})
    with pytest.raises(ConfigError) as error:
        model.load_trunk(str(msd))
    assert "\n" not in str(error.value)
    assert re.search(named, str(error.value)), str(error.value)


def test_fit_with_the_overlay_freezes_musicnns_layers_and_trains_the_gru(msd, tmp_path) -> None:
    """``fit`` with configs/musicnn_crnn_transfer.yaml and --model.freeze_trunk_epochs: musicnn's
    layers stay bit-identical (batch-norm statistics too) while the GRU's side trains."""
    from tests.conftest import TINY_MODEL, fit_args, make_fma

    corpus = make_fma(tmp_path / "fma", {"training": 1, "validation": 1}, seconds=1.5)
    args = [a for a in fit_args(corpus, tmp_path / "logs") if a not in TINY_MODEL]
    assert main([*args[:2], "--config", str(OVERLAY), *args[2:], "--trainer.limit_train_batches=1",
                 "--trainer.limit_val_batches=1", f"--model.init_from={msd}",
                 "--model.freeze_trunk_epochs=1"]) == 0  # fmt: skip
    trained = load_checkpoint(next((tmp_path / "logs").rglob("*.ckpt")))
    state, hparams = trained["state_dict"], trained["hyper_parameters"]
    assert hparams["trunk"]["class_path"] == CRNN_TRUNK["class_path"]
    assert hparams["window_seconds"] == 1.0 and hparams["frontend"] == "musicnn"
    source = load_checkpoint(msd)["state_dict"]
    shared = [k for k in state if k.startswith("trunk.") and _is_musicnn(k[6:])]
    assert shared and all(torch.equal(state[k], source[k]) for k in shared)
    # The batch norm in front of the GRU starts with bias 0 and running mean 0: it was optimised
    # (gradients reached it through the GRU; one step of a one-step schedule moves it little)
    # and ran in train mode, while musicnn's layers ran in eval mode.
    assert not torch.equal(state["trunk.sequence_norm.bias"], torch.zeros(753))
    assert not torch.equal(state["trunk.sequence_norm.running_mean"], torch.zeros(753))
