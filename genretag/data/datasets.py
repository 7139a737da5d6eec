"""Where a batch is born: clip datasets, the crop sampler, and :func:`collate` into a :class:`Batch`.

Training items are random crops; evaluation items are the windows that cover a whole clip
(:func:`genretag.windows.windows`, the same windows ``tag`` cuts). Items are decoded on
DataLoader workers from a :class:`Source`: the audio files themselves (:class:`AudioFiles`) or
the decoded-audio cache (:class:`genretag.data.cache.DecodedCache`). A file that cannot be
decoded gives ``{"bad": (path, reason)}`` instead of raising: :func:`collate` drops it from the
batch and passes it on, and the LightningModule logs each bad file once and counts it.

Crop positions are seeded per item from (seed, epoch, index), as audiocraft does, and the
shuffled order from (seed, epoch) by :class:`EpochSampler`: an epoch's batches do not depend on
the number of workers, and a run resumed from a checkpoint draws the same crops as one that
never stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler, default_collate

from genretag.data import audio
from genretag.windows import PadMode, fit_length, windows

log = logging.getLogger(__name__)


class Batch(TypedDict, total=False):
    """The one batch shape that training, evaluation and tagging produce and consume.

    audio:     (N, T) float32 mono at the model's rate: N crops (training, N = B) or the windows
               of B clips (evaluation and tagging).
    clip:      (N,) long, the clip in 0..B-1 each window belongs to (evaluation and tagging);
               absent for training crops.
    key:       B clip ids (FMA track ids, Freesound file names, tagging: the file's index).
    target:    (B, C) float multi-hot (genres) or (B,) long class ids (Freesound); not in tagging.
    weight:    (B,) float loss weights (Freesound ``verified: weighted``), when used.
    bad:       [(path, reason)] files that could not be decoded (left out of the batch).
    truncated: [(path, decoded samples, samples the header declares)] files that decoded to
               less than ``TRUNCATED_SHARE`` of their declared length (kept in the batch).
    ended:     tagging only: [(key, decoded samples)] clips whose last window is in this batch
               or an earlier one from the same worker.
    """

    audio: Tensor
    clip: Tensor
    key: list[str]
    target: Tensor
    weight: Tensor
    bad: list[tuple[str, str]]
    truncated: list[tuple[str, int, int]]
    ended: list[tuple[str, int]]


class Source(Protocol):
    """Where decoded audio comes from: the files themselves, or the decoded-audio cache."""

    sample_rate: int

    def random_crop(self, path: str, seconds: float, position: float) -> np.ndarray:
        """A crop of ``seconds`` at ``position`` (0..1) of the room the clip leaves: (T,)."""

    def decode(self, path: str) -> np.ndarray:
        """The whole clip (T,) float32 at ``sample_rate``."""


@dataclass(frozen=True)
class AudioFiles:
    """The :class:`Source` that decodes the files themselves (genretag.data.audio)."""

    sample_rate: int

    def random_crop(self, path: str, seconds: float, position: float) -> np.ndarray:
        return audio.random_crop(path, self.sample_rate, seconds, position)

    def decode(self, path: str) -> np.ndarray:
        return audio.decode(path, self.sample_rate)


@dataclass(frozen=True)
class ClipList:
    """What to load: file paths, their keys, targets ((N, C) float or (N,) int) and weights."""

    paths: list[str]
    keys: list[str]
    targets: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, index: int, audio: np.ndarray | Tensor) -> dict[str, Any]:
        item = {"audio": torch.as_tensor(audio), "target": torch.as_tensor(self.targets[index])}
        item["key"] = self.keys[index]
        if self.weights is not None:
            item["weight"] = torch.tensor(self.weights[index], dtype=torch.float32)
        return item


def crop_seed() -> int:
    """The run's seed (``seed_everything`` sets PL_GLOBAL_SEED), 0 when none is set."""
    return int(os.environ.get("PL_GLOBAL_SEED") or 0)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, epoch): a permutation seeded by (seed, epoch), or 0..n-1 in order.

    The dataset seeds each crop from the pair, so no draw depends on a worker's own generator.
    The epoch is the larger of what :meth:`set_epoch` was told and ``epoch_of()`` (the trainer's
    restored epoch), read when the epoch's iterator is made. Each alone lags somewhere: Lightning
    calls set_epoch only after a resumed run's first iterator exists (persistent workers have
    prefetched from it by then), and the trainer's count moves only after the next epoch's
    iterator was made.
    """

    def __init__(
        self, size: int, shuffle: bool, seed: int = 0, epoch_of: Callable[[], int] | None = None
    ) -> None:
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0
        self.epoch_of = epoch_of

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = max(self.epoch, self.epoch_of() if self.epoch_of is not None else 0)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = range(self.size)
        return iter([(index, epoch) for index in order])


class _Clips(Dataset):
    """Clips of a ClipList decoded on demand from a :class:`Source`."""

    def __init__(
        self, clips: ClipList, source: Source, seconds: float, pad_mode: PadMode = "zero"
    ) -> None:
        self.clips, self.source, self.seconds, self.pad_mode = clips, source, seconds, pad_mode
        self.length = round(seconds * source.sample_rate)
        self.seed = crop_seed()

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, index: int, epoch: int) -> tuple[np.ndarray, tuple[str, int, int] | None]:
        """(the item's audio (T,) or (W, T), its truncation report or None); raises
        AudioDecodeError."""
        raise NotImplementedError

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = index if isinstance(index, tuple) else (index, 0)
        try:
            x, truncated = self.load(index, epoch)
        except audio.AudioDecodeError as error:
            return {"bad": (error.path, error.reason)}
        item = self.clips.item(index, x)
        if truncated is not None:
            item["truncated"] = truncated
        return item


class TrainClips(_Clips):
    """Random crops of ``seconds`` from each clip: item audio (T,), T = seconds * sample_rate.

    Index the dataset with (index, epoch) pairs (:class:`EpochSampler`): the crop's position is
    drawn from a generator seeded by (seed, epoch, index).
    """

    def load(self, index: int, epoch: int) -> tuple[np.ndarray, None]:
        rng = np.random.default_rng((self.seed, epoch, index))
        x = self.source.random_crop(self.clips.paths[index], self.seconds, float(rng.random()))
        return fit_length(x, self.length, self.pad_mode), None


class EvalClips(_Clips):
    """Whole clips cut into windows of ``seconds``: item audio (W, T)."""

    def load(self, index: int, epoch: int) -> tuple[np.ndarray, tuple[str, int, int] | None]:
        path = self.clips.paths[index]
        x = self.source.decode(path)
        # the cache stores what was decoded, so only the files themselves are checked
        short = isinstance(self.source, AudioFiles) and audio.truncation(
            path, len(x), self.source.sample_rate
        )
        return windows(x, self.length, mode=self.pad_mode), short or None


def collate(items: list[dict[str, Any]]) -> Batch:
    """Stack good items into a :class:`Batch`; evaluation items (W, T) get a ``clip`` index (N,).

    A batch whose items all failed has B = 0 (``audio`` (0, 0)).
    """
    good = [it for it in items if "audio" in it]
    batch: Batch = {"bad": [it["bad"] for it in items if "bad" in it]}
    batch["truncated"] = [it["truncated"] for it in good if "truncated" in it]
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
