"""musicnn's VGG baseline exactly as published, to carry its trained weights (MSD_vgg, MTT_vgg).

The ``musicnn`` 0.1.0 package's ``models.vgg`` with ``num_filters=128`` (Pons & Serra, ISMIR LBD
2019, the "vgg" models beside musicnn), layer for layer, with TensorFlow's semantics (see
genretag.pretrained.musicnn for the weight mapping). The input is laid out as TensorFlow's
(frames, mels) image, time first:

* input batch norm over the whole log-mel (one channel);
* five blocks of a 3x3 conv ("same": one zero each side), ReLU, batch norm (after the ReLU, as
  musicnn does) and a max-pool with TensorFlow's "valid" padding (a partial window is dropped):
  (4, 1) over (time, mel) with stride (2, 2) in the first (overlapping in time; it keeps every
  other mel bin without pooling across bins), (2, 2) in the next three, (4, 4) in the last;
  dropout 0.25 after each of the first four pools;
* 187 frames x 96 bins pool to (frames, mels) 92 x 48, 46 x 24, 23 x 12, 11 x 6, 2 x 1; the last
  map is flattened as TensorFlow flattens NHWC, (time, mel, channel) row-major: 2 x 128 = 256
  values, the trunk's output.

The 50-tag dense layer (after dropout 0.5) is genretag's head (genretag.heads). Batch norms use
TensorFlow's epsilon 0.001 and momentum 0.99 (torch momentum 0.01).

Length: the flatten ties the dense layer after it to the size of the last map, so the trunk takes
windows of exactly ``frames`` frames (187, 2.992 s at 16 kHz with hop 256 and the musicnn
front-end; other lengths raise a ConfigError naming ``data.window_seconds``). musicnn's own code
is no different: its graph has a fixed input length, and its extractor refuses any
``input_length`` but 3 s for the vgg models.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from genretag.errors import ConfigError
from genretag.models.musicnn_original import EPS, MOMENTUM

# (time, mel) pool size and stride of each block, as in musicnn's models.vgg
POOLS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((4, 1), (2, 2)),
    ((2, 2), (2, 2)),
    ((2, 2), (2, 2)),
    ((2, 2), (2, 2)),
    ((4, 4), (4, 4)),
)


def pooled_size(size: int, pool: int, stride: int) -> int:
    """Length after a max-pool with TensorFlow's "valid" padding (0 when the window won't fit)."""
    return max(0, (size - pool) // stride + 1)


class VGGBlock(nn.Module):
    """(B, C_in, frames, mels) -> (B, C, frames', mels'): 3x3 conv, ReLU, batch norm, max-pool."""

    def __init__(self, in_channels: int, channels: int, pool: tuple[int, int],
                 stride: tuple[int, int]) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels, eps=EPS, momentum=MOMENTUM)
        self.pool, self.stride = pool, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(self.norm(F.relu(self.conv(x))), self.pool, self.stride)


class MusicnnVGG(nn.Module):
    """Log-mel (B, n_mels, frames) -> (B, out_features): musicnn's vgg up to its dense layer.

    Parameters with the default arguments (n_mels=96): 592,898 (counted in tests/test_trunks.py).
    Published: musicnn's MSD_vgg and MTT_vgg checkpoints hold 605,748 trainable values: these
    and the 50-tag head's 12,850 (plus 1,282 batch-norm statistics).
    """

    window_seconds = 2.992  # 187 frames (47,872 samples) at 16 kHz, hop 256, musicnn front-end
    # auto: fp32; bf16: under autocast, as for musicnn's other network (MusicnnFeatures: why)
    auto_bf16 = False
    bf16_autocast = True

    def __init__(
        self,
        n_mels: int = 96,
        frames: int = 187,
        filters: int = 128,
        dropout: float = 0.25,
    ) -> None:
        """
        Args:
            n_mels: mel bins of the input (musicnn: 96).
            frames: the one input length it takes (musicnn: 187); the flatten fixes it.
            filters: channels of every conv block (musicnn's ``num_filters``: 128).
            dropout: after each of the first four pools (musicnn: 0.25).
        """
        super().__init__()
        self.n_mels, self.frames = n_mels, frames
        time, mel = frames, n_mels
        for (pool_t, pool_m), (stride_t, stride_m) in POOLS:
            time, mel = pooled_size(time, pool_t, stride_t), pooled_size(mel, pool_m, stride_m)
        if time * mel == 0:
            raise ConfigError(
                f"model.trunk.init_args.frames: MusicnnVGG pools {frames} frames x {n_mels} mel "
                "bins to nothing; it needs at least 66 frames and 63 bins"
            )
        self.input_norm = nn.BatchNorm2d(1, eps=EPS, momentum=MOMENTUM)
        self.blocks = nn.ModuleList(
            VGGBlock(1 if i == 0 else filters, filters, pool, stride)
            for i, (pool, stride) in enumerate(POOLS)
        )
        self.dropout = nn.Dropout(dropout)
        self.out_features = time * mel * filters

    def forward(self, spec: Tensor) -> Tensor:
        if spec.shape[1:] != (self.n_mels, self.frames):
            raise ConfigError(
                f"MusicnnVGG takes log-mels of exactly {self.n_mels} bins x {self.frames} frames "
                f"(its flatten fixes the length), got {tuple(spec.shape[1:])}: set "
                f"data.window_seconds to give {self.frames} frames (2.992 s gives 187 with the "
                "musicnn front-end at 16 kHz, hop 256)"
            )
        x = self.input_norm(spec.transpose(1, 2).unsqueeze(1))  # (B, 1, frames, mels): NHWC's HW
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.dropout(x))
        return x.permute(0, 2, 3, 1).reshape(len(x), -1)  # TF's NHWC flatten: (time, mel, C)
