"""The log-mel front-ends (LogMel: the only nnAudio import; MusicnnMel: musicnn's) and SpecAugment.

The front-end runs inside the model, on the device, in fp32 even under autocast: nnAudio's STFT
overflows to inf in fp16 on loud audio. Its kernels are rebuilt from the hyper-parameters, not
stored in checkpoints (non-persistent buffers), so checkpoints stay small.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from nnAudio.features import MelSpectrogram
from torch import Tensor, nn

from genretag.constants import F_MAX, F_MIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE
from genretag.errors import ConfigError

Frontend = Literal["logmel", "musicnn"]
# The hyper-parameters that define the front-end: models that share a trunk or an ensemble must
# agree on every one of them. A checkpoint without one had its default (FRONTEND_DEFAULTS).
FRONTEND_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "frontend")
FRONTEND_DEFAULTS = {"frontend": "logmel"}
FLOAT16_MAX = 65504.0


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


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, np.float64)
    mel = hz / (200.0 / 3)
    log = hz >= 1000.0
    mel[log] = 15.0 + np.log(hz[log] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = mel * (200.0 / 3)
    log = mel >= 15.0
    hz[log] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log] - 15.0))
    return hz


def mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """librosa.filters.mel's Slaney filterbank (htk=False, norm="slaney"): (n_mels, n_fft//2+1)
    float32, computed as librosa computes it (float64 ramps, float32 weights, then the area
    normalisation), so that it equals librosa's to the last bit or so."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([f_min]))[0],
                                   _hz_to_mel(np.array([f_max]))[0], n_mels + 2))  # fmt: skip
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, freqs)
    weights = np.zeros((n_mels, len(freqs)), np.float32)
    for i in range(n_mels):
        lower, upper = -ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights


class MusicnnMel(nn.Module):
    """Waveform (B, T) -> musicnn's log-mel (B, n_mels, frames), frames = T // hop.

    As musicnn computes it (``extractor.batch_data``): librosa's mel spectrogram of the power
    STFT (periodic Hann, centred frames), Slaney mel filters, the mel rounded to float16 (musicnn
    stores it so; clamped to float16's largest value where musicnn would make it inf), then
    ``log10(10000 * mel + 1)`` in float32.

    Frames are centred at 0, hop, 2 hop, ...; the frame centred on the last sample (T // hop + 1
    with ``center=True``) is left out, so that a window of ``187 * 256`` samples gives musicnn's
    187-frame patch and consecutive windows give consecutive patches. ``pad_mode``: how the STFT
    pads the edges. "reflect" is librosa's default before 0.10, which musicnn was trained and
    published with; librosa >= 0.10 pads zeros ("constant"). Only the first frame of a window
    depends on it.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
        n_mels: int = N_MELS,
        f_min: float = 0.0,
        f_max: float | None = None,
        pad_mode: Literal["reflect", "constant"] = "reflect",
        float16_mel: bool = True,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.pad_mode = n_fft, hop_length, pad_mode
        self.float16_mel = float16_mel
        fb = torch.from_numpy(mel_filters(sample_rate, n_fft, n_mels, f_min, f_max))
        self.register_buffer("filters", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        with torch.autocast(device_type=audio.device.type, enabled=False):
            frames = audio.shape[-1] // self.hop_length
            stft = torch.stft(audio.float(), self.n_fft, self.hop_length, window=self.window,
                              center=True, pad_mode=self.pad_mode, return_complex=True)  # fmt: skip
            power = torch.view_as_real(stft[..., :frames]).square().sum(-1)  # (B, bins, frames)
            mel = torch.matmul(self.filters, power)  # (B, n_mels, frames)
            if self.float16_mel:
                mel = mel.clamp(max=FLOAT16_MAX).half().float()
            return torch.log10(10000.0 * mel + 1.0)


def build_frontend(
    kind: Frontend = "logmel",
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float | None = F_MAX,
) -> nn.Module:
    """The front-end named by the ``frontend`` hyper-parameter: waveform (B, T) -> (B, n_mels, F).

    "logmel": genretag's own (nnAudio, natural log), frames = T // hop + 1; "musicnn": musicnn's
    (:class:`MusicnnMel`), frames = T // hop.
    """
    if kind == "logmel":
        return LogMel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
    if kind == "musicnn":
        return MusicnnMel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
    raise ConfigError(f"model.frontend: {kind!r} is not a front-end; use logmel or musicnn")


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
