"""The log-mel front-end (the only nnAudio import) and SpecAugment.

The front-end runs inside the model, on the device, in fp32 even under autocast: nnAudio's STFT
overflows to inf in fp16 on loud audio. Its kernels are rebuilt from the hyper-parameters, not
stored in checkpoints (non-persistent buffers), so checkpoints stay small.
"""

from __future__ import annotations

import torch
from nnAudio.features import MelSpectrogram
from torch import Tensor, nn

from genretag.constants import F_MAX, F_MIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

# The hyper-parameters that define the front-end: models that share a trunk or an ensemble must
# agree on every one of them.
FRONTEND_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max")


class LogMel(nn.Module):
    """Waveform (B, T) float mono -> log-mel (B, n_mels, frames), frames = T // hop + 1."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
        n_mels: int = N_MELS,
        f_min: float = F_MIN,
        f_max: float | None = F_MAX,
    ) -> None:
        super().__init__()
        self.mel = MelSpectrogram(
            sr=sample_rate,
            n_fft=n_fft,
            n_mels=n_mels,
            hop_length=hop_length,
            fmin=f_min,
            fmax=f_max,
            center=True,
            pad_mode="reflect",
            power=2.0,
            trainable_mel=False,
            trainable_STFT=False,
            verbose=False,
        )
        for module in self.mel.modules():
            module._non_persistent_buffers_set.update(module._buffers)

    def forward(self, audio: Tensor) -> Tensor:
        with torch.autocast(device_type=audio.device.type, enabled=False):
            mel = self.mel(audio.float())
            return torch.log(mel + 1e-6)


class SpecAugment(nn.Module):
    """Random time and frequency masks on (B, n_mels, frames), in training mode only.

    Each example gets ``freq_masks`` bands of up to ``freq_width`` mel bins and ``time_masks``
    spans of up to ``time_width`` frames set to the example's mean (Park et al., 2019).
    """

    def __init__(
        self, freq_masks: int = 2, freq_width: int = 12, time_masks: int = 2, time_width: int = 40
    ) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def _masks(self, spec: Tensor, dim: int, count: int, width: int) -> Tensor:
        size = spec.shape[dim]
        batch = spec.shape[0]
        widths = torch.randint(0, width + 1, (batch, count, 1), device=spec.device)
        starts = (
            torch.rand(batch, count, 1, device=spec.device) * (size - widths).clamp(min=1)
        ).long()
        pos = torch.arange(size, device=spec.device).view(1, 1, -1)
        mask = ((pos >= starts) & (pos < starts + widths)).any(dim=1)  # (B, size)
        return mask.unsqueeze(2) if dim == 1 else mask.unsqueeze(1)

    def forward(self, spec: Tensor) -> Tensor:
        if not self.training:
            return spec
        mask = self._masks(spec, 1, self.freq_masks, self.freq_width)
        mask = mask | self._masks(spec, 2, self.time_masks, self.time_width)
        fill = spec.mean(dim=(1, 2), keepdim=True)
        return torch.where(mask, fill, spec)
