"""The network without its trainer: old checkpoints load, and scoring never imports Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genretag.network import Network
from genretag.task import TaggingTask
from tests.conftest import save_model

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


def previous_release_checkpoint(path: Path) -> tuple[Path, np.ndarray]:
    """The checkpoint genretag 0.1.0 at 7ebffb4 wrote (tests/data/make_previous_release.py):
    its state dict and hyper-parameters as stored, and the probabilities it gave for three tones.
    """
    stored = np.load(DATA / "previous_release.npz", allow_pickle=False)
    state = {
        name.removeprefix("state/"): torch.from_numpy(stored[name])
        for name in stored.files
        if name.startswith("state/")
    }
    hparams = json.loads(str(stored["hyper_parameters"]))
    lightning = str(stored["pytorch_lightning_version"])
    content = {"state_dict": state, "hyper_parameters": hparams, "epoch": 0, "global_step": 0}
    torch.save({**content, "pytorch-lightning_version": lightning}, path)
    return path, stored["probs"]


def tones() -> torch.Tensor:
    t = np.arange(16_000) / 16_000
    waves = [0.3 * np.sin(2 * np.pi * f * t) for f in (110.0, 880.0, 3520.0)]
    return torch.from_numpy(np.stack(waves).astype(np.float32))


def test_a_checkpoint_of_the_previous_release_scores_the_same(tmp_path: Path) -> None:
    path, expected = previous_release_checkpoint(tmp_path / "old.ckpt")
    network = Network.load(path)
    with torch.inference_mode():
        probs = network.probabilities(network(tones()))
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-6)
    assert network.labels == ["Rock", "Electronic", "Hip-Hop"]
    assert network.label_thresholds.tolist() == pytest.approx([0.3, 0.5, 0.7])
    # training resumes from it too, and what it saves has the same keys
    task = TaggingTask(**{k: v for k, v in network.hparams.items()})
    task.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    saved = torch.load(save_model(task, tmp_path / "new.ckpt"), weights_only=True)
    assert saved["state_dict"].keys() == torch.load(path, weights_only=True)["state_dict"].keys()


SCORERS = {
    "tag": "from genretag.tagger.command import main; main([{files!r}, '--ckpt', {ckpt!r}, "
    "'--out', {out!r}, '--workers', '0', '--quiet'])",
    "embed": "from genretag.commands.embed import main; main(['--ckpt', {ckpt!r}, {files!r}, "
    "'--out', {out!r} + '.npy'])",
    "export": "from genretag.commands.export import main; main([{ckpt!r}, '--out', {out!r} + '.ckpt'])",
    "beets scoring": "from beets import config; from beetsplug.genretag import GenreTagPlugin; "
    "config['genretag']['ckpt'] = {ckpt!r}; config['genretag']['workers'] = 0; "
    "plugin = GenreTagPlugin(); settings = plugin.settings(); "
    "predictor, choose = plugin._load(settings); "
    "found = list(plugin._decide([{files!r} + '/a.wav'], predictor, settings)); "
    "assert found[0][1] is None and choose(found[0][2]), found",
}


@pytest.mark.parametrize("command", list(SCORERS))
def test_scoring_never_imports_lightning(command: str, tmp_path: Path) -> None:
    import soundfile as sf

    ckpt, _ = previous_release_checkpoint(tmp_path / "model.ckpt")
    files = tmp_path / "music"
    files.mkdir()
    sf.write(files / "a.wav", tones()[0].numpy(), 16_000)
    code = SCORERS[command].format(files=str(files), ckpt=str(ckpt), out=str(tmp_path / "out"))
    check = "import sys; assert 'pytorch_lightning' not in sys.modules, 'Lightning imported'"
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{check}"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
