"""Writes previous_release.npz: a tiny checkpoint as genretag 0.1.0 (commit 7ebffb4) saved it.

Run once against that release's checkout, not by the tests:
    git worktree add --detach /tmp/prev 7ebffb4
    cd /tmp/prev && PYTHONPATH=/tmp/prev python /path/to/make_previous_release.py OUT.npz
It stores the Lightning checkpoint's state dict (one array per key, as written), its
hyper-parameters (JSON) and the probabilities that release gave for three tones, so that
tests/test_network.py can rebuild the file and hold today's loader to it.
"""

import json
import sys

import numpy as np
import torch

from genretag.task import TaggingTask, load_model
from tests.conftest import save_model

torch.manual_seed(0)
model = TaggingTask(
    ["Rock", "Electronic", "Hip-Hop"],
    channels=(4, 8, 8, 8),
    gru_hidden=8,
    gru_layers=1,
    window_seconds=1.0,
    genre_tree={"Rock": ["Rock"], "Electronic": ["Electronic"], "Hip-Hop": ["Hip-Hop"]},
)
with torch.no_grad():  # trained-looking statistics and thresholds, not the init values
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.label_thresholds.copy_(torch.tensor([0.3, 0.5, 0.7]))
    model.head[1].weight.mul_(6.0)
save_model(model, "/tmp/prev.ckpt")
checkpoint = torch.load("/tmp/prev.ckpt", weights_only=True)
loaded = load_model("/tmp/prev.ckpt")
t = np.arange(16_000) / 16_000  # the test makes the same three tones
tones = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (110.0, 880.0, 3520.0)])
with torch.no_grad():
    probs = loaded.head.probabilities(loaded(torch.from_numpy(tones.astype(np.float32))))
hparams = {
    k: list(v) if isinstance(v, tuple) else v
    for k, v in checkpoint["hyper_parameters"].items()
    if not k.startswith("_")
}
np.savez_compressed(
    sys.argv[1],
    hyper_parameters=np.array(json.dumps(hparams)),
    probs=probs.numpy(),
    pytorch_lightning_version=np.array(checkpoint["pytorch-lightning_version"]),
    **{f"state/{k}": v.numpy() for k, v in checkpoint["state_dict"].items()},
)
