"""Pooling a sequence of states over time into one vector per clip.

The recurrent trunks (genretag.models.crnn.CRNN, genretag.models.musicnn_crnn.MusicnnCRNN) pool
their GRU states the same way: attention (softmax weights over time, "somewhere in the clip"
evidence) concatenated with the mean ("throughout the clip" evidence).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def attention_mean_pool(steps: Tensor, attention: nn.Module) -> Tensor:
    """States (B, T, D) -> (B, 2D): the attention-weighted sum, then the mean over time.

    ``attention`` maps (B, T, D) to one score per step (B, T, 1) (an ``nn.Linear(D, 1)``, kept
    by the trunk as its ``attention`` attribute so its weights keep their state-dict names). The
    softmax runs in float32, so the weights stay exact under bf16.
    """
    weights = torch.softmax(attention(steps).float(), dim=1).to(steps.dtype)  # (B, T, 1)
    attended = (weights * steps).sum(dim=1)
    return torch.cat([attended, steps.mean(dim=1)], dim=1)
