"""The short-chunk ResNet trunk (after Won, Ferraro, Bogdanov & Serra, 2020).

"Evaluation of CNN-based automatic music tagging models" (SMC 2020): seven residual blocks of
two 3x3 convs, each halving frequency and time (stride 2, a strided 3x3 shortcut), on ~3.7 s
chunks, then a global max over time. With 128 mels the paper's 7 halvings end at 1 bin; with 96
the same 7 stride-2 blocks give 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 2 -> 1 (a 3x3 stride-2 conv
with padding 1 rounds up), and a 3.69 s chunk (231 frames at hop 256 / 16 kHz) ends at 2 frames.
A max over whatever is left makes every length from 1 s to 30 s work. Evaluated over many
chunks per track: configs set ``data.window_seconds`` to :attr:`ShortChunkResNet.window_seconds`.
"""

from __future__ import annotations

from torch import Tensor, nn


class ResBlock(nn.Module):
    """(B, C_in, M, F) -> (B, C_out, ceil(M / 2), ceil(F / 2)): two 3x3 convs + a strided shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ShortChunkResNet(nn.Module):
    """Log-mel (B, n_mels, frames) -> (B, 4 * channels): 7 residual blocks, then a global max.

    Parameters with the default arguments (n_mels=96): 740,546 (counted in tests/test_trunks.py).
    Published: not published as a count in Won et al. 2020 (searched). Its reference
    implementation (minzwon/sota-music-tagging-models training/model.py, ShortChunkCNN_Res,
    n_channels=128, 128 mels), counted by rebuilding its layers: 11,814,914 up to the global max,
    12,104,244 with its 512-unit dense back-end and 50 tags. Widths here are a quarter of that
    (channels=32: 32-32-64-64-64-64-128) so that it trains on a CPU.
    """

    window_seconds = 3.69  # the paper's chunk: 59,049 samples at 16 kHz

    def __init__(self, n_mels: int = 96, channels: int = 32, blocks: int = 7) -> None:
        """
        Args:
            n_mels: mel bins of the input.
            channels: width of the first blocks; widths go c, c, 2c, 2c, 2c, 2c, 4c (7 blocks).
            blocks: residual blocks, each halving frequency and time (7 in the paper).
        """
        super().__init__()
        if blocks < 1:
            raise ValueError("ShortChunkResNet: blocks must be at least 1")
        widths = [channels * (1 if i < 2 else 2) for i in range(blocks - 1)] + [4 * channels]
        self.input_norm = nn.BatchNorm2d(1)
        self.blocks = nn.Sequential(
            *[ResBlock(c_in, c_out) for c_in, c_out in zip((1, *widths[:-1]), widths, strict=True)]
        )
        self.out_features = widths[-1]

    def forward(self, spec: Tensor) -> Tensor:
        x = self.blocks(self.input_norm(spec.unsqueeze(1)))  # (B, 4c, M', F')
        return x.amax(dim=(2, 3))  # (B, 4c)
