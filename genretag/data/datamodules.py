"""LightningDataModules: one shared base that streams clips, one subclass per dataset.

The base turns a :class:`ClipList` per stage into DataLoaders (decoding on worker processes,
pinned memory, persistent workers, worker count from the machine's cores). Subclasses only say
which files, keys and targets make up each stage, and name the labels.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from genretag.constants import FSD_WINDOW_SECONDS, SAMPLE_RATE, WINDOW_SECONDS
from genretag.data import fma, freesound
from genretag.data.cache import DecodedCache
from genretag.data.datasets import (
    AudioFiles,
    ClipList,
    EpochSampler,
    EvalClips,
    Source,
    TrainClips,
    collate,
    crop_seed,
)
from genretag.errors import ConfigError
from genretag.system import available_cores
from genretag.windows import PadMode

log = logging.getLogger(__name__)

Stage = Literal["train", "val", "test"]


def default_workers() -> int:
    """One decoding worker per core this process may use (at most 16)."""
    return min(available_cores(), 16)


class ClipDataModule(pl.LightningDataModule):
    """Base: random crops of ``window_seconds`` for training, covering windows for evaluation."""

    task: str = "multilabel"
    label_names: list[str]

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        window_seconds: float = WINDOW_SECONDS,
        batch_size: int = 32,
        num_workers: int | None = None,
        pad_mode: PadMode = "zero",
        prefetch_factor: int | None = None,
        pin_memory: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        """
        Args:
            sample_rate: Hz the audio is resampled to (and the model runs at).
            window_seconds: training crop and evaluation window length.
            batch_size: clips per batch (evaluation batches hold every window of each clip).
            num_workers: decoding processes; default one per core.
            pad_mode: how clips shorter than a window are filled: zeros or repeats (``loop``);
                the model keeps it, so ``tag`` pads the same way.
            prefetch_factor: batches each worker prepares ahead; default: 8 batches in flight
                over all workers, at least 2 each (see ClipDataModule.prefetch).
            pin_memory: page-locked batches for fast, asynchronous copies to the GPU.
            cache_dir: if set, each clip is decoded once (first epoch, or `genretag prepare`)
                into memory-mapped int16 files here, and crops are read from them; if None,
                every epoch decodes from the audio files. See genretag.data.cache.
        """
        super().__init__()
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self.batch_size = batch_size
        self.requested_workers = num_workers
        self.pad_mode = pad_mode
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.cache = DecodedCache(cache_dir, sample_rate) if cache_dir else None
        self.source: Source = self.cache if self.cache is not None else AudioFiles(sample_rate)
        self._clips: dict[str, ClipList] = {}

    @property
    def num_workers(self) -> int:
        """Decoding processes per loader: as set, else this process's share of the cores.

        Under DDP every rank on a node starts its own workers, so the default divides the
        cores by the devices on the node (a trainer with 8 GPUs and 64 cores: 8 workers each).
        """
        if self.requested_workers is not None:
            return self.requested_workers
        trainer = self.trainer
        devices = max(1, int(getattr(trainer, "num_devices", 1) or 1)) if trainer else 1
        return max(1, default_workers() // devices)

    @num_workers.setter
    def num_workers(self, value: int | None) -> None:
        self.requested_workers = value

    def prefetch(self, workers: int) -> int:
        """Batches each of ``workers`` prepares ahead: as set, else ~8 in flight, 2 at least.

        Enough to ride out a slow file on one worker; more only holds shared and pinned memory
        (16 workers x 4 batches of 64 x 10 s would pin 2.6 GB and overflow a container's /dev/shm).
        """
        if self.prefetch_factor is not None:
            return self.prefetch_factor
        return max(2, -(-8 // workers))

    @property
    def genre_tree(self) -> dict[str, list[str]] | None:
        """Each label's ancestors in the data's taxonomy, root first (None: no taxonomy)."""
        return None

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
            sampler=EpochSampler(len(dataset), shuffle, crop_seed(), self._current_epoch),
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=workers,
            # the workers' base seed comes from here, not from the global generator, which the
            # model's own draws (mixup, SpecAugment, dropout) then use alone
            generator=torch.Generator().manual_seed(crop_seed()),
            collate_fn=collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch(workers) if workers > 0 else None,
        )

    def _current_epoch(self) -> int:
        """The trainer's epoch (restored on resume), 0 outside a trainer."""
        trainer = self.trainer
        return int(trainer.current_epoch) if trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        clips = TrainClips(self._clips["train"], self.source, self.window_seconds, self.pad_mode)
        return self._loader(clips, shuffle=True)

    def _eval_loader(self, stage: Stage) -> DataLoader:
        clips = EvalClips(self._clips[stage], self.source, self.window_seconds, self.pad_mode)
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
        **kwargs: Any,
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
            **kwargs: the shared loading settings of ClipDataModule (sample_rate,
                window_seconds, batch_size, num_workers, pad_mode, prefetch_factor, pin_memory,
                cache_dir).
        """
        super().__init__(**kwargs)
        self.meta_dir, self.audio_dir, self.demo_root = Path(meta_dir), Path(audio_dir), demo_root
        self.subset, self.label_mode, self.min_tracks = subset, labels, min_tracks

    @cached_property
    def index(self) -> fma.LabelledTracks:
        """The subset's tracks, splits and targets, read on first use (not in __init__, so a bad
        setting surfaces as one clear ConfigError when the CLI links the labels to the model)."""
        if self.demo_root is not None:
            from genretag.synth.demo import ensure_demo

            self.meta_dir, self.audio_dir = ensure_demo(Path(self.demo_root))
        return fma.label_tracks(self.meta_dir, self.subset, self.label_mode, self.min_tracks)

    @property
    def label_names(self) -> list[str]:
        return self.index.labels

    @property
    def genre_tree(self) -> dict[str, list[str]]:
        """FMA's taxonomy for these labels, from genres.csv (``tag --with-parents``)."""
        from genretag.vocabulary import genre_tree

        return genre_tree(fma.read_genres(self.meta_dir), self.label_names)

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


# -- FSDKaggle2018 -------------------------------------------------------------------------------
class FreesoundDataModule(ClipDataModule):
    """FSDKaggle2018 (41 classes, one label per clip): class-id targets (N,) int64.

    Training: the training clips outside the validation split, filtered or weighted by their
    ``manually_verified`` flag. Validation: a seeded, class-stratified share of the verified
    training clips, or one of ``folds`` stratified folds of them. Test: the scored test clips.
    Predict: the test clips (plus Kaggle's unscored padding clips with ``predict_ignored``), in
    the CSV's order, for a Kaggle submission. ``trusted`` (label spreading) promotes unverified
    clips to verified; ``pseudo`` (self-training) adds pseudo-labelled clips to training. The
    layouts, the splits and the missing-file policy are in genretag.data.freesound.
    """

    task = "multiclass"

    def __init__(
        self,
        root: str = "data/FSDKaggle2018",
        verified: Literal["all", "verified", "weighted"] = "all",
        unverified_weight: float = 0.5,
        val_fraction: float = 0.1,
        seed: int = 0,
        max_missing: float = freesound.MAX_MISSING,
        predict_ignored: bool = False,
        demo_root: str | None = None,
        window_seconds: float = FSD_WINDOW_SECONDS,
        pad_mode: PadMode = "loop",
        folds: int = 0,
        fold: int = 0,
        trusted: str | None = None,
        pseudo: str | None = None,
        pseudo_weight: float = 0.5,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: the FSDKaggle2018 folder, official layout (FSDKaggle2018.audio_train/,
                FSDKaggle2018.meta/ ...) or Kaggle's (audio_train/, train.csv ...).
            verified: training clips used: ``all``; ``verified`` (manually verified only); or
                ``weighted`` (all, the unverified with loss weight ``unverified_weight``).
            unverified_weight: loss weight of an unverified clip in ``weighted`` mode.
            val_fraction: share of each class's verified training clips held out for validation.
            seed: seed of the validation split (independent of seed_everything).
            max_missing: the largest share of a split's listed audio files that may be absent
                (they are left out with a warning); above it, or when all are absent, it is an
                error (a wrong root or a half-extracted download).
            predict_ignored: also predict Kaggle's unscored padding clips (usage Ignored), as a
                complete Kaggle late submission needs all 9,400 rows.
            demo_root: if set, a small synthetic FSD-shaped corpus (official layout) is written
                there when missing and used instead of ``root``.
            window_seconds: training crop and evaluation window length (3 s: most clips are
                shorter than that).
            pad_mode: how clips shorter than a window are filled: ``loop`` (repeat) or ``zero``.
            folds: K >= 2 splits the verified clips into K stratified, seeded folds (``seed``)
                and validates on fold ``fold`` (val_fraction is then unused); 0: no folds.
            fold: which fold validates, 0..folds-1.
            trusted: a ``genretag spread-labels`` CSV; its trusted unverified clips count as
                verified in ``verified`` and ``weighted`` modes.
            pseudo: a pseudo-label CSV (path,label; ``genretag self-train`` writes it): extra
                training clips with loss weight ``pseudo_weight``.
            pseudo_weight: loss weight of a pseudo-labelled clip (the others keep theirs).
            **kwargs: the other shared loading settings of ClipDataModule (sample_rate,
                batch_size, num_workers, prefetch_factor, pin_memory, cache_dir).
        """
        super().__init__(window_seconds=window_seconds, pad_mode=pad_mode, **kwargs)
        self.folds, self.fold, self.trusted = folds, fold, trusted
        self.pseudo, self.pseudo_weight = pseudo, pseudo_weight
        self.root, self.demo_root = Path(demo_root or root), demo_root
        self.verified, self.unverified_weight = verified, unverified_weight
        self.val_fraction, self.seed, self.max_missing = val_fraction, seed, max_missing
        self.predict_ignored = predict_ignored

    @cached_property
    def index(self) -> freesound.FSDIndex:
        """The corpus's clips and splits, read on first use (not in __init__, so a bad setting
        surfaces as one clear ConfigError rather than inside LightningCLI's instantiation)."""
        if not 0.0 <= self.unverified_weight <= 1.0:
            raise ConfigError(f"data.unverified_weight: {self.unverified_weight} must be in [0, 1]")
        if not 0.0 < self.pseudo_weight <= 1.0:
            raise ConfigError(f"data.pseudo_weight: {self.pseudo_weight} must be in (0, 1]")
        if self.demo_root is not None and not self.root.is_dir():
            log.info("writing a synthetic FSDKaggle2018-shaped demo corpus to %s", self.root)
            from genretag.synth.freesound import synthesize

            synthesize(self.root, train_per_class=12, verified_per_class=8, test_per_class=4)
        return freesound.load(
            self.root,
            self.val_fraction,
            self.seed,
            self.max_missing,
            folds=self.folds,
            fold=self.fold,
            trusted=self.trusted,
        )

    @property
    def label_names(self) -> list[str]:
        """The 41 classes, sorted (reading the corpus first, so a wrong root fails early)."""
        _ = self.index
        return list(freesound.CLASSES)

    def clip_list(self, stage: Stage | Literal["predict"]) -> ClipList:
        paths, keys, targets, weights = self.index.clips(
            stage, self.verified, self.unverified_weight, with_unscored=self.predict_ignored
        )
        if not paths:
            mode = f" (data.verified={self.verified})" if stage == "train" else ""
            raise ConfigError(f"data.root: no {stage} clips{mode} in {self.root}")
        if stage == "train" and self.pseudo is not None:
            import numpy as np

            extra = freesound.read_pseudo(self.pseudo)
            log.info("%s: %d pseudo-labelled training clips", self.pseudo, len(extra))
            if weights is None:
                weights = np.ones(len(paths), np.float32)
            paths = paths + list(extra["path"])
            keys = keys + list(extra["path"])
            targets = np.concatenate([targets, extra["target"].to_numpy(np.int64)])
            weights = np.concatenate([weights, np.full(len(extra), self.pseudo_weight, np.float32)])
        return ClipList(paths=paths, keys=keys, targets=targets, weights=weights)

    def setup(self, stage: str) -> None:
        if stage == "test" and not self.index.layout.test_labelled:
            raise ConfigError(
                f"data.root: {self.root} has no test labels (only "
                f"{self.index.layout.test_csv.name}); `test` needs test_post_competition.csv "
                f"there (`predict` works without it)"
            )
        if stage != "predict":
            super().setup(stage)
        elif "predict" not in self._clips:
            self._clips["predict"] = self.clip_list("predict")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")  # type: ignore[arg-type]
