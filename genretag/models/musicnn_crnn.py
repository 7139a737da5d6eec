"""musicnn's front-end under a recurrent back-end: the CRNN with pretrained features.

(B, n_mels, frames) -> (B, 4 * gru_hidden). The input batch norm, ``front`` and ``mid`` are
musicnn's layers (genretag.models.musicnn_original.MusicnnFeatures, same names and shapes), so
``--model.init_from musicnn-msd`` starts them from musicnn's published weights
(:attr:`MusicnnCRNN.transfers_from`, genretag.network.Network.transfer_trunk); the rest is
genretag's CRNN back-end, trained from scratch:

* the 753 frame features musicnn's own back-end pools (the front's 561 timbral and temporal
  channels and the three mid-end layers' 64 each): the GRU sees everything musicnn's dense layer
  learned to read, not only the mid-end's last layer (which drops the front's timbral channels);
* max-pooling over ``time_pool`` frames (4: 64 ms steps at hop 256 / 16 kHz; a 10 s window
  gives the GRU 157 steps) and a batch norm;
* a bidirectional GRU, then attention + mean pooling over its states as in
  genretag.models.crnn.CRNN (genretag.models.pooling).

musicnn's front never subsamples time and is convolutional, so any window works (its weights
were trained on 3 s patches; a longer window gives the GRU more time to read, at proportional
cost). ``--model.freeze_trunk_epochs`` freezes only musicnn's layers
(:attr:`MusicnnCRNN.frozen_layers`): the GRU trains from the first epoch.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from genretag.errors import ConfigError
from genretag.models.musicnn_original import MusicnnFeatures
from genretag.models.pooling import attention_mean_pool

# musicnn's layers, by submodule name: what the trunk takes from a MusicnnOriginal checkpoint.
MUSICNN_LAYERS = ("input_norm", "front", "mid")


class MusicnnCRNN(MusicnnFeatures):
    """Log-mel (B, n_mels, frames) -> (B, 4 * gru_hidden): musicnn's front + mid, then a GRU.

    Parameters with the default arguments (n_mels=96): 1,448,652 (counted in tests/test_trunks.py):
    musicnn's input norm, front and mid 472,297 (as in MusicnnOriginal), the GRU 974,592, its
    input batch norm 1,506, the attention 257.
    """

    # Trunk class path -> this trunk's submodules that a checkpoint of that class initialises
    # (model.init_from; same names and shapes there), checked strictly by genretag.network.
    transfers_from: ClassVar[dict[str, tuple[str, ...]]] = {
        "genretag.models.musicnn_original.MusicnnOriginal": MUSICNN_LAYERS,
    }
    # What --model.freeze_trunk_epochs freezes (weights and batch-norm statistics).
    frozen_layers: ClassVar[tuple[str, ...]] = MUSICNN_LAYERS

    def __init__(
        self,
        n_mels: int = 96,
        filters_scale: float = 1.6,
        mid_channels: int = 64,
        time_pool: int = 4,
        gru_hidden: int = 128,
        gru_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        """
        Args:
            n_mels: mel bins of the input (musicnn's weights: 96).
            filters_scale: musicnn's ``num_filt`` (1.6 for its published weights).
            mid_channels: musicnn's mid-end channels (64 for its published weights).
            time_pool: frames max-pooled into one GRU step (1: every frame).
            gru_hidden: hidden units per direction of the bidirectional GRU.
            gru_layers: stacked GRU layers.
            dropout: on the GRU's input features and between GRU layers.
        """
        super().__init__(n_mels, filters_scale, mid_channels)
        if time_pool < 1:
            raise ConfigError(f"model.trunk.init_args.time_pool: {time_pool} frames; use 1 or more")
        self.time_pool = time_pool
        self.sequence_norm = nn.BatchNorm1d(self.feature_channels)
        self.sequence_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            self.feature_channels,
            gru_hidden,
            num_layers=gru_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if gru_layers > 1 else 0.0,
        )
        self.attention = nn.Linear(2 * gru_hidden, 1)
        self.out_features = 4 * gru_hidden

    def forward(self, spec: Tensor) -> Tensor:
        x = self.features(spec)  # (B, 753, frames)
        if self.time_pool > 1:
            x = F.max_pool1d(x, self.time_pool, ceil_mode=True)  # (B, 753, ceil(frames / pool))
        x = self.sequence_dropout(self.sequence_norm(x)).transpose(1, 2)  # (B, T', 753)
        steps, _ = self.gru(x)  # (B, T', 2H)
        return attention_mean_pool(steps, self.attention)  # (B, 4H)
