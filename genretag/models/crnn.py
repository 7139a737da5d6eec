"""The CRNN trunk (after Choi et al., 2017): conv blocks over the log-mel, a GRU over time.

(B, n_mels, frames) -> (B, out_features). The conv blocks pool the frequency axis down to one
bin (96 -> 48 -> 24 -> 12 -> 1 with four blocks) and time by 2 per block, so a 10 s window at hop 256 /
16 kHz (626 frames) leaves ~39 steps for the GRU. The GRU states are pooled over time by
attention (softmax weights) concatenated with the mean, so both "somewhere in the clip" and
"throughout the clip" evidence reach the head.
"""

from __future__ import annotations

from torch import Tensor, nn

from genretag.models.pooling import attention_mean_pool


def _frequency_pools(n_mels: int, blocks: int) -> list[int]:
    """Frequency pooling per block: 2 in each but the last, which pools what is left to 1 bin."""
    return [2] * (blocks - 1) + [max(1, -(-n_mels // 2 ** (blocks - 1)))]


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int], dropout: float) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ELU(inplace=True),
            nn.MaxPool2d(pool, ceil_mode=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )


class CRNN(nn.Module):
    """Log-mel (B, n_mels, frames) -> pooled features (B, out_features)."""

    def __init__(
        self,
        n_mels: int = 96,
        channels: tuple[int, ...] = (64, 128, 128, 128),
        gru_hidden: int = 128,
        gru_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        pools = _frequency_pools(n_mels, len(channels))
        self.input_norm = nn.BatchNorm2d(1)
        self.convs = nn.Sequential(
            *[
                ConvBlock(c_in, c_out, (f_pool, 2), dropout)
                for c_in, c_out, f_pool in zip((1, *channels[:-1]), channels, pools, strict=True)
            ]
        )
        self.gru = nn.GRU(
            channels[-1],
            gru_hidden,
            num_layers=gru_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if gru_layers > 1 else 0.0,
        )
        self.attention = nn.Linear(2 * gru_hidden, 1)
        self.out_features = 4 * gru_hidden

    def forward(self, spec: Tensor) -> Tensor:
        x = self.input_norm(spec.unsqueeze(1))  # (B, 1, M, F)
        x = self.convs(x)  # (B, C, 1, F')
        x = x.flatten(1, 2).transpose(1, 2)  # (B, F', C)
        steps, _ = self.gru(x)  # (B, F', 2H)
        return attention_mean_pool(steps, self.attention)  # (B, 4H)
