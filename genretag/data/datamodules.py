"""LightningDataModules: one shared base that streams clips, one subclass per dataset.

The base turns a :class:`ClipList` per stage into DataLoaders (decoding on worker processes,
pinned memory, persistent workers, worker count from the machine's cores). Subclasses only say
which files, keys and targets make up each stage, and name the labels.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from genretag.data import fma
from genretag.data.datasets import ClipList, EvalClips, PadMode, TrainClips, collate
from genretag.errors import ConfigError

log = logging.getLogger(__name__)

Stage = Literal["train", "val", "test"]


def default_workers() -> int:
    """One decoding worker per core this process may use (at most 16)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return min(cores, 16)


class ClipDataModule(pl.LightningDataModule):
    """Base: random crops of ``window_seconds`` for training, covering windows for evaluation."""

    task: str = "multilabel"
    label_names: list[str]

    def __init__(
        self,
        sample_rate: int = 16_000,
        window_seconds: float = 10.0,
        batch_size: int = 32,
        num_workers: int | None = None,
        pad_mode: PadMode = "zero",
        prefetch_factor: int = 4,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.pad_mode = pad_mode
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self._clips: dict[str, ClipList] = {}

    def clip_list(self, stage: Stage) -> ClipList:
        """The files, keys and targets of one stage (subclasses)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }
        for name in wanted.get(stage, ()):
            if name not in self._clips:
                self._clips[name] = self.clip_list(name)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        clips = TrainClips(
            self._clips["train"], self.sample_rate, self.window_seconds, self.pad_mode
        )
        return self._loader(clips, shuffle=True)

    def _eval_loader(self, stage: Stage) -> DataLoader:
        clips = EvalClips(self._clips[stage], self.sample_rate, self.window_seconds, self.pad_mode)
        return self._loader(clips, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class FMADataModule(ClipDataModule):
    """FMA (small/medium/large/full) with the official split and multi-label genre targets."""

    def __init__(
        self,
        meta_dir: str = "fma_meta",
        audio_dir: str = "data/fma_small",
        subset: fma.Subset = "small",
        labels: fma.LabelMode = "top",
        min_tracks: int = 1,
        demo_root: str | None = None,
        sample_rate: int = 16_000,
        window_seconds: float = 10.0,
        batch_size: int = 32,
        num_workers: int | None = None,
        pad_mode: PadMode = "zero",
        prefetch_factor: int = 4,
        pin_memory: bool = True,
    ) -> None:
        """
        Args:
            meta_dir: folder with FMA's tracks.csv and genres.csv (unpacked fma_metadata.zip).
            audio_dir: folder with the subset's MP3s (``000/000002.mp3`` ...).
            subset: small, medium, large or full (nested: small is in all the others).
            labels: ``top`` (root genres) or ``all`` (every genre with min_tracks).
            min_tracks: keep a genre when at least this many training tracks carry it.
            demo_root: if set, the embedded demo corpus is synthesized there when missing, and
                meta_dir/audio_dir point into it.
            sample_rate: Hz the audio is resampled to (and the model runs at).
            window_seconds: training crop and evaluation window length.
            batch_size: clips per batch (evaluation batches hold every window of each clip).
            num_workers: decoding processes; default one per core.
            pad_mode: how clips shorter than a window are filled: zeros or repeats.
            prefetch_factor: batches each worker prepares ahead.
            pin_memory: page-locked batches for fast, asynchronous copies to the GPU.
        """
        super().__init__(
            sample_rate,
            window_seconds,
            batch_size,
            num_workers,
            pad_mode,
            prefetch_factor,
            pin_memory,
        )
        if demo_root is not None:
            from genretag.data.demo import ensure_demo

            meta, audio = ensure_demo(Path(demo_root))
            meta_dir, audio_dir = str(meta), str(audio)
        self.meta_dir, self.audio_dir, self.subset = Path(meta_dir), Path(audio_dir), subset
        self.index = fma.label_tracks(meta_dir, subset, labels, min_tracks)
        self.label_names = self.index.labels

    def clip_list(self, stage: Stage) -> ClipList:
        split = {"train": "training", "val": "validation", "test": "test"}[stage]
        ids, targets = self.index.split(split)
        if len(ids) == 0:
            raise ConfigError(
                f"data.subset: fma_{self.subset} has no {split} tracks in {self.meta_dir}"
            )
        paths = [str(self.audio_dir / fma.audio_relpath(int(t))) for t in ids]
        missing = [p for p in paths if not os.path.exists(p)]
        if len(missing) == len(paths):
            raise ConfigError(
                f"data.audio_dir: none of the {len(paths)} {split} tracks of fma_{self.subset} is in "
                f"{self.audio_dir} (first path tried: {paths[0]}); download them with "
                f"`python -m genretag download fma_{self.subset} --to data/` or fix --data.audio_dir"
            )
        if missing:
            log.warning(
                "%d of %d %s files are missing from %s (first: %s); they are skipped and counted",
                len(missing), len(paths), split, self.audio_dir, missing[0],
            )  # fmt: skip
        return ClipList(paths=paths, keys=[str(int(t)) for t in ids], targets=targets)
