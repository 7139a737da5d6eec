"""musicnn exactly as published (Pons & Serra, 2019), to carry its trained weights.

"musicnn: pre-trained convolutional neural networks for music audio tagging" (ISMIR LBD 2019),
the ``musicnn`` 0.1.0 package's ``models.build_musicnn``, layer for layer, with TensorFlow's
semantics (see genretag.pretrained.musicnn for the weight mapping):

* input batch norm over the whole log-mel (one channel);
* timbral front: two vertical filters (7 frames x 38 and x 67 mel bins, 1.6 * 128 = 204 each)
  over the time-padded input, then ReLU, batch norm (after the ReLU, as musicnn does), max over
  frequency;
* temporal front: three horizontal filters (128, 64, 32 frames x 1 bin, 1.6 * 32 = 51 each) with
  TensorFlow's "same" padding (asymmetric for even lengths: 63 before and 64 after for 128), then
  ReLU, batch norm, max over frequency;
* mid-end: three 1-D convolutions over time (7 frames, 64 channels, ReLU then batch norm), the
  second and third with residual connections; the front's 561 channels and each layer's output
  are concatenated (753 channels);
* back-end: max and mean over time, interleaved per channel as TensorFlow flattens them
  ((753, 2) -> 1506), batch norm, dropout, dense (200, ReLU), batch norm: the trunk's output.

:class:`MusicnnFeatures` holds the input norm, front and mid-end (the frame features), shared with
genretag.models.musicnn_crnn.MusicnnCRNN; :class:`MusicnnOriginal` adds the back-end. The genre
head (dropout + the 50-tag dense layer) is genretag's (genretag.heads). Batch norms use
TensorFlow's epsilon 0.001 and momentum 0.99 (torch momentum 0.01), so fine-tuning behaves as
the original did. Any number of frames works; the weights were trained on 187 (3 s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default epsilon
MOMENTUM = 0.01  # TensorFlow's momentum 0.99 in torch's convention


def _norm(cls: type[nn.Module], channels: int) -> nn.Module:
    return cls(channels, eps=EPS, momentum=MOMENTUM)


def same_padding(length: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) of a stride-1 filter: the odd one goes after."""
    return (length - 1) // 2, length // 2


def _max_over_bins(x: Tensor) -> Tensor:
    """(B, C, frames, bins) -> max over bins (B, C, frames).

    A channels-last map (genretag.inference runs CPU convs so) goes through oneDNN's pooling,
    vectorised over channels: torch's reduction over the strided bins dimension is ~8x slower,
    and 1.75x slower than the pooling in bf16 (exact either way)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return F.max_pool2d(x, kernel_size=(1, int(x.shape[3])))[..., 0]  # int: a constant in ONNX
    return x.amax(dim=3)


class FrontBlock(nn.Module):
    """(B, 1, frames, mels) -> (B, C, frames): conv, ReLU, batch norm, max over frequency."""

    def __init__(self, channels: int, height: int, width: int, pad: tuple[int, int]) -> None:
        super().__init__()
        self.pad = pad  # zeros before and after in time
        self.conv = nn.Conv2d(1, channels, (height, width))
        self.norm = _norm(nn.BatchNorm2d, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, *self.pad))
        if self.training:
            return self.norm(torch.relu(self.conv(x))).amax(dim=3)
        # In eval mode the batch norm is a per-channel a * x + b, so the max over frequency of
        # a * relu(x) + b is a * relu(max x) + b where a >= 0 and a * relu(min x) + b where
        # a < 0, and min x = -max(-x): one conv with the filters of negative-a channels negated,
        # one max, then the affine map on (B, C, frames) only. Exact, and ~2x faster than
        # normalising and rectifying the whole (frames, bins) map.
        norm = self.norm
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # type: ignore[operator]
        shift = norm.bias - norm.running_mean * scale  # type: ignore[operator]
        sign = torch.where(scale >= 0, 1.0, -1.0).to(x.dtype)
        y = F.conv2d(x, self.conv.weight * sign[:, None, None, None], self.conv.bias * sign)
        picked = torch.relu(_max_over_bins(y) * sign[:, None])
        return picked * scale[:, None] + shift[:, None]


class MidBlock(nn.Module):
    """(B, C_in, frames) -> (B, C, frames): 7-frame conv (3 zeros each side), ReLU, batch norm."""

    def __init__(self, in_channels: int, channels: int, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, kernel, padding=kernel // 2)
        self.norm = _norm(nn.BatchNorm1d, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(torch.relu(self.conv(x)))


class MusicnnFeatures(nn.Module):
    """Log-mel (B, n_mels, frames) -> musicnn's frame features (B, feature_channels, frames).

    musicnn's input batch norm, front (``front``: 2 timbral + 3 temporal FrontBlocks, 561
    channels at the default scale) and mid-end (``mid``: 3 MidBlocks); :meth:`features` returns
    the front's channels and each mid layer's, concatenated (753), which musicnn's back-end pools
    over time. The trunks built on it (MusicnnOriginal, genretag.models.musicnn_crnn.MusicnnCRNN)
    keep these layers under these names, so musicnn's converted weights fit both.

    ``auto_bf16 = False``: ``--precision auto`` runs these trunks in fp32 on every machine
    (genretag.system.choose_precision). ``bf16_autocast``: ``--precision bf16`` runs them under
    bf16 autocast (genretag.inference), not cast whole. On 293 real files (Debian soundtracks,
    5.4 h; benchmarks/tagging.py), musicnn's MSD network in bf16 kept fp32's top genre on 290
    under autocast (98.98%, scores within 0.0131) and on 284 cast whole (96.9%, 0.022), so it
    misses the 99% that ``auto`` holds a precision to; ``--precision bf16`` runs it 2.3x faster
    than fp32 where the CPU has bf16 arithmetic.
    """

    auto_bf16 = False
    bf16_autocast = True

    def __init__(
        self, n_mels: int = 96, filters_scale: float = 1.6, mid_channels: int = 64
    ) -> None:
        super().__init__()
        timbral, temporal = int(filters_scale * 128), int(filters_scale * 32)
        self.input_norm = _norm(nn.BatchNorm2d, 1)
        self.front = nn.ModuleList(
            [FrontBlock(timbral, 7, int(f * n_mels), (3, 3)) for f in (0.4, 0.7)]
            + [FrontBlock(temporal, n, 1, same_padding(n)) for n in (128, 64, 32)]
        )
        front = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList(
            [MidBlock(front, mid_channels), MidBlock(mid_channels, mid_channels),
             MidBlock(mid_channels, mid_channels)]
        )  # fmt: skip
        self.feature_channels = front + 3 * mid_channels

    def features(self, spec: Tensor) -> Tensor:
        """(B, n_mels, frames) -> (B, feature_channels, frames): front and mid outputs."""
        x = self.input_norm(spec.transpose(1, 2).unsqueeze(1))  # (B, 1, frames, mels)
        front = torch.cat([block(x) for block in self.front], dim=1)  # (B, 561, frames)
        h1 = self.mid[0](front)
        h2 = self.mid[1](h1) + h1
        h3 = self.mid[2](h2) + h2
        return torch.cat([front, h1, h2, h3], dim=1)  # (B, 753, frames)


class MusicnnOriginal(MusicnnFeatures):
    """Log-mel (B, n_mels, frames) -> (B, dense_units): musicnn up to its penultimate layer.

    Parameters with the default arguments (n_mels=96): 777,109 (counted in tests/test_trunks.py).
    Published: musicnn's MSD_musicnn and MTT_musicnn checkpoints hold 792,079 values for
    inference: these, 4,920 batch-norm statistics and the 50-tag head's 10,050.

    ``auto_onnx = True``: where ``--precision auto`` would run it in torch fp32 and the
    ``genretag[onnx]`` extra is installed, ONNX Runtime runs it, the same arithmetic (scores
    within 1e-5): ``tag --ckpt musicnn-msd`` 1.10-1.14x faster on an AVX2 EPYC, its forward
    1.36x (genretag.system.choose_precision).
    """

    auto_onnx = True

    def __init__(
        self,
        n_mels: int = 96,
        filters_scale: float = 1.6,
        mid_channels: int = 64,
        dense_units: int = 200,
        dropout: float = 0.5,
    ) -> None:
        """
        Args:
            n_mels: mel bins of the input (musicnn: 96; the timbral filters span 0.4 and 0.7 of them).
            filters_scale: musicnn's ``num_filt``: 128 x it timbral, 32 x it temporal filters.
            mid_channels: channels of the mid-end convolutions (musicnn: 64; "big": 512).
            dense_units: units of the penultimate dense layer (musicnn: 200; "big": 500).
            dropout: before the penultimate dense layer (musicnn: 0.5).
        """
        super().__init__(n_mels, filters_scale, mid_channels)
        pooled = 2 * self.feature_channels
        self.pool_norm = _norm(nn.BatchNorm1d, pooled)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(pooled, dense_units)
        self.dense_norm = _norm(nn.BatchNorm1d, dense_units)
        self.out_features = dense_units

    def forward(self, spec: Tensor) -> Tensor:
        return self.back_end(self.features(spec))

    def back_end(self, x: Tensor) -> Tensor:
        """musicnn's back-end: frame features (B, 753, frames) -> (B, dense_units)."""
        # TensorFlow flattens (channels, [max, mean]) row-major: max and mean interleave.
        pooled = torch.stack([x.amax(dim=2), x.mean(dim=2)], dim=2).flatten(1)  # (B, 1506)
        x = self.dense(self.dropout(self.pool_norm(pooled)))
        return self.dense_norm(torch.relu(x))
