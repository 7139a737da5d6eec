"""The musically motivated trunk (musicnn, after Pons et al., 2018; Pons & Serra, 2019).

"End-to-end learning for music audio tagging at scale" (ISMIR 2018) and "musicnn: pre-trained
convolutional neural networks for music audio tagging" (ISMIR LBD 2019). Front-end: vertical
(timbral) filters spanning a fraction of the mel axis, max-pooled over frequency, and horizontal
(temporal) filters of several lengths over the frequency-averaged log-mel; mid-end: 1D convs with
residual connections whose outputs are all kept (dense connections); then max and mean over time.
Time is never subsampled, so any length works.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Timbral(nn.Module):
    """(B, 1, M, F) -> (B, C, F): a (height x width) filter, batch norm, ReLU, max over frequency."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, (height, width), padding=(0, width // 2), bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.norm(self.conv(x))).amax(dim=2)


class Temporal(nn.Module):
    """(B, 1, M, F) -> (B, C, F): mean over frequency, a length-L filter, batch norm, ReLU."""

    def __init__(self, channels: int, length: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, length, padding=length // 2, bias=False)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.norm(self.conv(x.mean(dim=2))))


class Musicnn(nn.Module):
    """Log-mel (B, n_mels, frames) -> (B, out_features), out_features = 2 * (front + layers * mid).

    Parameters with the default arguments (n_mels=96): 135,282 (counted in tests/test_trunks.py).
    Published: not published as a count in Pons et al. 2018 or Pons & Serra 2019 (searched). The
    reference implementation used by Won et al. 2020 (minzwon/sota-music-tagging-models
    training/model.py, Musicnn for MagnaTagATune: 2 x 204 timbral + 3 x 51 temporal filters,
    3 x 64 mid-end), counted by rebuilding its layers: 472,450 up to the pooling, 784,300 with its
    200-unit dense back-end and 50 tags.
    """

    def __init__(
        self,
        n_mels: int = 96,
        timbral_heights: tuple[float, ...] = (0.7, 0.4),
        timbral_width: int = 7,
        timbral_channels: int = 32,
        temporal_lengths: tuple[int, ...] = (129, 65, 33),
        temporal_channels: int = 16,
        mid_channels: int = 64,
        mid_layers: int = 3,
        mid_kernel: int = 7,
    ) -> None:
        """
        Args:
            n_mels: mel bins of the input.
            timbral_heights: heights of the vertical filters as fractions of n_mels.
            timbral_width: their width in frames.
            timbral_channels: filters per height.
            temporal_lengths: lengths in frames of the horizontal filters (odd).
            temporal_channels: filters per length.
            mid_channels, mid_layers, mid_kernel: the 1D mid-end; every layer but the first adds
                its input (residual), and the front-end and every layer's output are pooled.
        """
        super().__init__()
        self.input_norm = nn.BatchNorm2d(1)
        self.front = nn.ModuleList(
            [
                Timbral(timbral_channels, max(1, int(h * n_mels)), timbral_width)
                for h in timbral_heights
            ]
            + [Temporal(temporal_channels, length) for length in temporal_lengths]
        )
        front = timbral_channels * len(timbral_heights) + temporal_channels * len(temporal_lengths)
        self.mid = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(
                    front if i == 0 else mid_channels,
                    mid_channels,
                    mid_kernel,
                    padding=mid_kernel // 2,
                    bias=False,
                ),
                nn.BatchNorm1d(mid_channels),
                nn.ReLU(inplace=True),
            )  # fmt: skip
            for i in range(mid_layers)
        )
        self.out_features = 2 * (front + mid_layers * mid_channels)

    def forward(self, spec: Tensor) -> Tensor:
        x = self.input_norm(spec.unsqueeze(1))  # (B, 1, M, F)
        frames = x.shape[-1]
        # A length-L filter with L // 2 padding keeps the length for odd L; crop even ones.
        front = torch.cat([layer(x)[..., :frames] for layer in self.front], dim=1)  # (B, front, F)
        outputs, h = [front], front
        for i, layer in enumerate(self.mid):
            h = layer(h) + (h if i > 0 else 0)
            outputs.append(h)
        x = torch.cat(outputs, dim=1)  # (B, front + layers * mid, F)
        return torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)
