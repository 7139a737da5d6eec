"""The log-mel front-end: nnAudio (genretag.features.LogMel) vs torch.stft + a mel matmul vs librosa.

    python benchmarks/frontend.py [--quick] [--batch 64] [--seconds 10]

A batch of 64 x 10 s of 16 kHz music-like audio through the project's settings (n_fft 512, hop
256, 96 mels up to 8 kHz, Slaney mel scale and norm, periodic Hann, centred with reflect
padding, power 2, log(x + 1e-6)), on the CPU and, when present, the GPU (fp32: the front-end
stays fp32 under autocast). Agreement: max |difference| in dB of each vs librosa in float64
(``pad_mode="reflect"``, ``htk=False``, ``norm="slaney"``, as nnAudio builds its filters).
Prints one JSON object, then a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from _corpus import music  # benchmarks/ is on the path when run as a script
from torch import Tensor

from genretag.features import LogMel

SR, N_FFT, HOP, N_MELS, F_MIN, F_MAX = 16_000, 512, 256, 96, 0.0, 8_000.0
DB = 10 / math.log(10)  # natural-log units -> dB of power


class TorchLogMel(torch.nn.Module):
    """torch.stft power spectrogram + the same mel matrix: (B, T) -> (B, n_mels, frames)."""

    def __init__(self) -> None:
        super().__init__()
        import librosa

        mel = librosa.filters.mel(
            sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=F_MIN, fmax=F_MAX, htk=False, norm="slaney"
        )
        self.register_buffer("mel", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        spec = torch.stft(
            audio.float(), N_FFT, HOP, window=self.window, center=True, pad_mode="reflect",
            return_complex=True,
        )  # fmt: skip
        power = spec.real.square() + spec.imag.square()
        return torch.log(self.mel @ power + 1e-6)


def librosa_logmel(audio: np.ndarray) -> np.ndarray:
    """The reference, float64: (B, T) -> (B, n_mels, frames)."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio.astype(np.float64), sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
        fmin=F_MIN, fmax=F_MAX, center=True, pad_mode="reflect", power=2.0, htk=False,
        norm="slaney",
    )  # fmt: skip
    return np.log(mel + 1e-6)


def timed(fn: Callable[[], object], device: torch.device, min_time: float) -> float:
    """Seconds per call (after a warm-up call), synchronising the GPU."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_time:
        fn()
        calls += 1
    sync()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 x 2 s, one pass each")
    parser.add_argument("--batch", type=int, default=None, help="clips per batch (default 64)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default 10)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per figure")
    args = parser.parse_args()
    batch = args.batch or (8 if args.quick else 64)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    min_time = args.min_time or (0.1 if args.quick else 2.0)
    audio = np.stack([music(seconds, SR, 1, seed=i)[:, 0] for i in range(batch)])
    cpu = torch.device("cpu")
    nnaudio, stft = LogMel(SR, N_FFT, HOP, N_MELS, F_MIN, F_MAX).eval(), TorchLogMel().eval()
    x = torch.from_numpy(audio)
    result: dict = {
        "benchmark": "frontend",
        "quick": args.quick,
        "batch": batch,
        "seconds": seconds,
        "torch_threads": torch.get_num_threads(),
        "devices": {},
    }
    with torch.inference_mode():
        reference = librosa_logmel(audio)
        outputs = {"nnaudio": nnaudio(x).numpy(), "torch_stft": stft(x).numpy()}
        result["max_abs_error_db_vs_librosa"] = {
            name: round(float(np.abs(out - reference).max() * DB), 6)
            for name, out in outputs.items()
        }
        result["max_abs_error_db_nnaudio_vs_torch_stft"] = round(
            float(np.abs(outputs["nnaudio"] - outputs["torch_stft"]).max() * DB), 6
        )
        per_batch = {
            "nnaudio": timed(lambda: nnaudio(x), cpu, min_time),
            "torch_stft": timed(lambda: stft(x), cpu, min_time),
            "librosa": timed(lambda: librosa_logmel(audio.astype(np.float32)), cpu, min_time),
        }
        result["devices"]["cpu"] = _figures(per_batch, batch)
        if torch.cuda.is_available():
            gpu = torch.device("cuda")
            xg, nnaudio_g, stft_g = x.to(gpu), nnaudio.to(gpu), stft.to(gpu)
            per_batch = {
                "nnaudio": timed(lambda: nnaudio_g(xg), gpu, min_time),
                "torch_stft": timed(lambda: stft_g(xg), gpu, min_time),
            }
            result["devices"]["cuda"] = {
                "name": torch.cuda.get_device_name(),
                **_figures(per_batch, batch),
            }
            diff = (nnaudio_g(xg) - stft_g(xg)).abs().max().item() * DB
            result["max_abs_error_db_nnaudio_vs_torch_stft_cuda"] = round(diff, 6)
    print(json.dumps(result))
    parts = []
    for device, figures in result["devices"].items():
        rates = ", ".join(
            f"{k} {v['clips_per_s']}/s" for k, v in figures.items() if isinstance(v, dict)
        )
        parts.append(f"{device}: {rates}")
    errors = result["max_abs_error_db_vs_librosa"]
    print(
        f"# log-mel {batch} x {seconds:g} s: {'; '.join(parts)}; max error vs librosa "
        f"nnAudio {errors['nnaudio']} dB, torch.stft {errors['torch_stft']} dB",
        flush=True,
    )


def _figures(seconds_per_batch: dict[str, float], batch: int) -> dict:
    figures: dict = {
        name: {"ms_per_batch": round(s * 1000, 2), "clips_per_s": round(batch / s, 1)}
        for name, s in seconds_per_batch.items()
    }
    figures["nnaudio_vs_torch_stft_time"] = round(
        seconds_per_batch["nnaudio"] / seconds_per_batch["torch_stft"], 2
    )
    return figures


if __name__ == "__main__":
    main()
