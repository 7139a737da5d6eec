"""Clip datasets: random crops for training, windows covering whole clips for evaluation.

Items are decoded on DataLoader workers through genretag.data.audio. A file that cannot be
decoded gives ``{"bad": (path, reason)}`` instead of raising: :func:`collate` drops it from the
batch and passes it on, and the LightningModule logs each bad file once and counts them. With a
:class:`~genretag.data.cache.DecodedCache`, items come from decoded copies (made on first use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from genretag.data import audio

if TYPE_CHECKING:
    from genretag.data.cache import DecodedCache

PadMode = Literal["zero", "loop"]


@dataclass(frozen=True)
class ClipList:
    """What to load: file paths, their keys, targets ((N, C) float or (N,) int) and weights."""

    paths: list[str]
    keys: list[str]
    targets: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, index: int, audio: np.ndarray | torch.Tensor) -> dict[str, Any]:
        item = {"audio": torch.as_tensor(audio), "target": torch.as_tensor(self.targets[index])}
        item["key"] = self.keys[index]
        if self.weights is not None:
            item["weight"] = torch.tensor(self.weights[index], dtype=torch.float32)
        return item


def fit_length(x: np.ndarray, length: int, mode: PadMode = "zero") -> np.ndarray:
    """Pad (zeros, or by repeating the clip) or cut (T,) to exactly ``length`` samples."""
    if len(x) >= length:
        return x[:length]
    if mode == "loop" and len(x) > 0:
        return np.tile(x, math.ceil(length / len(x)))[:length]
    return np.pad(x, (0, length - len(x)))


def windows(x: np.ndarray, length: int, mode: PadMode = "zero") -> np.ndarray:
    """Cover a clip (T,) with the fewest windows of ``length``, evenly spaced: (W, length).

    W = ceil(T / length); the first window starts at 0 and the last ends at T, so windows overlap
    a little when T is not a multiple of ``length``. A clip shorter than one window is padded.
    """
    if len(x) <= length:
        return fit_length(x, length, mode)[None]
    count = math.ceil(len(x) / length)
    starts = np.linspace(0, len(x) - length, count).round().astype(int)
    return np.stack([x[s : s + length] for s in starts])


class _Clips(Dataset):
    """Clips of a ClipList decoded on demand (from the cache when there is one)."""

    def __init__(
        self,
        clips: ClipList,
        sample_rate: int,
        seconds: float,
        pad_mode: PadMode = "zero",
        cache: DecodedCache | None = None,
    ) -> None:
        self.clips, self.sample_rate, self.seconds = clips, sample_rate, seconds
        self.pad_mode, self.cache = pad_mode, cache
        self.length = round(seconds * sample_rate)

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, path: str) -> np.ndarray:
        """The item's audio, (T,) or (W, T); raises AudioDecodeError."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            x = self.load(self.clips.paths[index])
        except audio.AudioDecodeError as error:
            return {"bad": (error.path, error.reason)}
        return self.clips.item(index, x)


class TrainClips(_Clips):
    """Random crops of ``seconds`` from each clip: item audio (T,), T = seconds * sample_rate."""

    def load(self, path: str) -> np.ndarray:
        position = float(torch.rand(()))  # seeded per worker by the DataLoader
        if self.cache is not None:
            x = self.cache.random_crop(path, self.seconds, position)
        else:
            x = audio.random_crop(path, self.sample_rate, self.seconds, position)
        return fit_length(x, self.length, self.pad_mode)


class EvalClips(_Clips):
    """Whole clips cut into windows of ``seconds``: item audio (W, T)."""

    def load(self, path: str) -> np.ndarray:
        x = (
            self.cache.decode(path)
            if self.cache is not None
            else audio.decode(path, self.sample_rate)
        )
        return windows(x, self.length, self.pad_mode)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack good items; evaluation items (W, T) are flattened with a ``clip`` index (N,).

    Returns ``audio`` (N, T), ``target`` (B, ...), ``key`` list of B, ``bad`` list of
    (path, reason), and ``clip`` (N,) long when items carry several windows, ``weight`` (B,)
    when items carry weights. A batch whose items all failed has B = 0.
    """
    good = [it for it in items if "audio" in it]
    batch: dict[str, Any] = {"bad": [it["bad"] for it in items if "bad" in it]}
    batch["key"] = [it["key"] for it in good]
    if not good:
        batch["audio"] = torch.zeros(0, 0)
        batch["target"] = torch.zeros(0)
        return batch
    audio_items = [it["audio"] for it in good]
    if audio_items[0].dim() == 2:
        counts = torch.tensor([len(a) for a in audio_items])
        batch["audio"] = torch.cat(audio_items)
        batch["clip"] = torch.repeat_interleave(torch.arange(len(good)), counts)
    else:  # default_collate stacks straight into shared memory on a worker: no extra copy
        batch["audio"] = default_collate(audio_items)
    batch["target"] = torch.stack([it["target"] for it in good])
    if "weight" in good[0]:
        batch["weight"] = torch.stack([it["weight"] for it in good])
    return batch
