"""Trunks: every one takes 1 s to 30 s log-mels, counts what its docstring says, bad configs fail clearly."""

from __future__ import annotations

import re

import pytest
import torch

from genretag.errors import ConfigError
from genretag.models import TRUNKS, build_trunk, count_parameters
from genretag.models.crnn import CRNN
from genretag.models.fcn import FCN
from genretag.models.musicnn import Musicnn
from genretag.models.musicnn_crnn import MusicnnCRNN
from genretag.models.musicnn_original import MusicnnOriginal
from genretag.models.musicnn_vgg import MusicnnVGG
from genretag.models.resnet import ShortChunkResNet

NEW_TRUNKS = [FCN, Musicnn, MusicnnCRNN, MusicnnOriginal, ShortChunkResNet]
FRAMES = {"1 s": 63, "10 s": 626, "30 s": 1876}  # 16 kHz, hop 256: T // 256 + 1


@pytest.mark.parametrize("cls", NEW_TRUNKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("length", FRAMES, ids=str)
def test_output_shape_for_any_length(cls, length: str) -> None:
    trunk = cls(n_mels=96).eval()
    with torch.no_grad():
        out = trunk(torch.randn(2, 96, FRAMES[length]))
    assert out.shape == (2, trunk.out_features)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", [*NEW_TRUNKS, MusicnnVGG], ids=lambda c: c.__name__)
def test_parameter_count_is_the_docstrings(cls) -> None:
    stated = re.search(r"default arguments \(n_mels=96\): ([\d,]+)", cls.__doc__)
    assert stated, f"{cls.__name__} docstring states no parameter count"
    assert count_parameters(cls()) == int(stated.group(1).replace(",", ""))


def test_musicnn_vgg_takes_its_187_frames_only() -> None:
    """Its flatten ties the dense layer to the length (as in musicnn): another is one clear line."""
    trunk = build_trunk({"class_path": "genretag.models.MusicnnVGG"}, 96).eval()
    assert isinstance(trunk, MusicnnVGG) and MusicnnVGG.window_seconds == 2.992
    with torch.no_grad():
        assert trunk(torch.randn(2, 96, 187)).shape == (2, trunk.out_features) == (2, 256)
        with pytest.raises(ConfigError, match=r"data\.window_seconds") as error:
            trunk(torch.randn(2, 96, FRAMES["10 s"]))
    assert "\n" not in str(error.value) and "187 frames" in str(error.value)
    assert MusicnnVGG(frames=FRAMES["10 s"]).out_features == 128 * 9  # 626 frames pool to 9
    with pytest.raises(ConfigError, match=r"^model\.trunk\.init_args\.frames: "):
        MusicnnVGG(frames=FRAMES["1 s"])


def test_resnet_states_its_window() -> None:
    assert ShortChunkResNet.window_seconds == 3.69


def test_spec_none_builds_the_crnn_with_its_args() -> None:
    trunk = build_trunk(None, 96, channels=(8, 8, 8, 8), gru_hidden=8, gru_layers=1, dropout=0.0)
    assert isinstance(trunk, CRNN) and trunk.out_features == 32


def test_class_path_and_init_args_from_yaml_data() -> None:
    spec = {"class_path": "genretag.models.fcn.FCN", "init_args": {"channels": [8, 16, 16]}}
    trunk = build_trunk(spec, 64)
    assert isinstance(trunk, FCN) and trunk.out_features == 16
    assert trunk(torch.randn(1, 64, 63)).shape == (1, 16)
    assert isinstance(build_trunk({"class_path": "genretag.models.Musicnn"}, 96), Musicnn)
    assert set(TRUNKS) >= {"genretag.models.resnet.ShortChunkResNet", "genretag.models.crnn.CRNN"}


@pytest.mark.parametrize(
    "class_path", ["os.system", "genretag.models.fcn.nn", "genretag.task.TaggingTask", "FCN"]
)
def test_bad_class_path_is_one_line(class_path: str) -> None:
    with pytest.raises(ConfigError, match=r"^model\.trunk\.class_path: ") as error:
        build_trunk({"class_path": class_path}, 96)
    assert "\n" not in str(error.value) and "genretag.models.fcn.FCN" in str(error.value)


@pytest.mark.parametrize(
    ("init_args", "named"),
    [
        ({"chanels": [8, 8]}, "chanels"),
        ({"channels": "wide"}, "channels"),
        ({"channels": [8, 8.5]}, "channels"),
        ({"time_pool": 2.0}, "time_pool"),
        ({"time_pool": True}, "time_pool"),
        ({"n_mels": 128}, "n_mels"),
    ],
)
def test_bad_init_arg_is_one_line_naming_it(init_args: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"^model\.trunk\.init_args\.{named}: ") as error:
        build_trunk({"class_path": "genretag.models.fcn.FCN", "init_args": init_args}, 96)
    assert "\n" not in str(error.value)


def test_float_argument_accepts_an_int() -> None:
    spec = {
        "class_path": "genretag.models.musicnn.Musicnn",
        "init_args": {"timbral_heights": [1, 0.5]},
    }
    assert isinstance(build_trunk(spec, 96), Musicnn)
