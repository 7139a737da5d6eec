"""The fully convolutional trunk (FCN, after Choi, Fazekas & Sandler, 2016).

"Automatic tagging using deep convolutional neural networks" (ISMIR 2016): 3x3 conv blocks with
batch norm, ReLU and max-pooling only, no recurrent or dense layer. The paper pools a fixed
29 s input (96 x 1366) down to 1 x 1 with fixed pool sizes; here the blocks pool frequency down to
one bin (96 -> 48 -> 24 -> 12 -> 6 -> 1) and time by 2 each, and a global max over what is left
ends the trunk, so any length from 1 s (63 frames) to 30 s (1876 frames) works.
"""

from __future__ import annotations

from torch import Tensor, nn


def frequency_pools(n_mels: int, blocks: int) -> list[int]:
    """Frequency pooling per block: 2 in each but the last, which pools what is left to 1 bin."""
    return [2] * (blocks - 1) + [max(1, -(-n_mels // 2 ** (blocks - 1)))]


class FCN(nn.Module):
    """Log-mel (B, n_mels, frames) -> (B, channels[-1]): conv blocks, then a global max.

    Parameters with the default arguments (n_mels=96): 129,890 (counted in tests/test_trunks.py).
    Published: not published (no parameter count found for Choi et al. 2016 in the sources
    searched). The reference implementation used by Won et al. 2020
    (minzwon/sota-music-tagging-models training/model.py, FCN with 64-128-128-128-64 channels),
    counted by rebuilding its layers: 444,482 without its dense layer, 447,732 with a 50-tag one.
    """

    def __init__(
        self,
        n_mels: int = 96,
        channels: tuple[int, ...] = (32, 64, 64, 64, 64),
        time_pool: int = 2,
    ) -> None:
        """
        Args:
            n_mels: mel bins of the input.
            channels: output channels of each conv block (5 in the paper's FCN-5).
            time_pool: time pooling of each block (frames are then max-pooled globally).
        """
        super().__init__()
        if not channels:
            raise ValueError("FCN: channels must name at least one block")
        self.input_norm = nn.BatchNorm2d(1)
        blocks = []
        pools = frequency_pools(n_mels, len(channels))
        for c_in, c_out, f_pool in zip((1, *channels[:-1]), channels, pools, strict=True):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d((f_pool, time_pool), ceil_mode=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.out_features = channels[-1]

    def forward(self, spec: Tensor) -> Tensor:
        x = self.blocks(self.input_norm(spec.unsqueeze(1)))  # (B, C, 1, F')
        return x.amax(dim=(2, 3))  # (B, C)
