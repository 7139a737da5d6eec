"""End-to-end epochs on a synthetic FMA-format corpus: clips/s with the decoded cache off and on.

    python benchmarks/fit.py [--quick] [--tracks 256] [--epochs 2] [--model default|tiny]
    python benchmarks/fit.py --tracks 6400 --val-tracks 800   # fma_small-sized, on a GPU box

The real objects `fit` builds (FMADataModule over tracks.csv + ``AAA/AAAAAA.mp3``, TaggingTask,
a Trainer with the CLI's precision: bf16-mixed on a GPU, fp32 on CPU), random 10 s training
crops, whole-clip validation in 10 s windows. Tracks are 30 s FMA-format MP3s (44.1 kHz stereo
320 kbit/s with ID3 + cover art, some 48 kHz or mono); ``--unique`` of them are encoded and the
rest are links to them, so a large corpus costs no encoding time. Runs twice: streaming (no
cache), then with an empty ``cache_dir`` (epoch 1 decodes and fills it, later epochs read it).
On a CPU the default model is the bottleneck, so the default there is ``--model tiny`` (the
data path's rate); the JSON says which. Prints one JSON object, then a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from _corpus import make_corpus  # benchmarks/ is on the path when run as a script

from genretag.data.datamodules import FMADataModule, default_workers
from genretag.task import TaggingTask

TINY = {"channels": (8, 16, 16, 16), "gru_hidden": 16, "gru_layers": 1}


class EpochTimer(pl.Callback):
    """Wall time and clips of every training and validation epoch (sanity check excluded).

    Lightning runs an epoch's validation before ``on_train_epoch_end``, so the training part
    ends where validation starts.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._start: dict[str, float] = {}
        self._clips = {"train": 0, "val": 0}

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.epochs.append({})
        self._open("train")

    def on_train_batch_end(self, trainer, module, outputs, batch: dict[str, Any], idx: int) -> None:
        self._clips["train"] += len(batch["audio"])

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._close("train")
            self._open("val")

    def on_validation_batch_end(self, trainer, module, outputs, batch, idx, loader_idx=0) -> None:
        self._clips["val"] += len(batch["key"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._close("val")

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._close("train")

    def _open(self, stage: str) -> None:
        self._start[stage], self._clips[stage] = time.perf_counter(), 0

    def _close(self, stage: str) -> None:
        if stage not in self._start or not self.epochs or f"{stage}_s" in self.epochs[-1]:
            return
        seconds = time.perf_counter() - self._start.pop(stage)
        self.epochs[-1][f"{stage}_s"] = round(seconds, 2)
        self.epochs[-1][f"{stage}_clips"] = self._clips[stage]
        self.epochs[-1][f"{stage}_clips_per_s"] = round(self._clips[stage] / seconds, 1)


def run(
    meta: Path, audio: Path, cache_dir: str | None, args: argparse.Namespace, model_kwargs: dict
) -> list[dict[str, float]]:
    """One fit of ``args.epochs`` epochs; the timings of each epoch."""
    pl.seed_everything(0, verbose=False)
    data = FMADataModule(
        meta_dir=str(meta), audio_dir=str(audio), window_seconds=args.window,
        batch_size=args.batch_size, num_workers=args.workers, cache_dir=cache_dir,
    )  # fmt: skip
    model = TaggingTask(labels=data.label_names, window_seconds=args.window, **model_kwargs)
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="auto", devices=1,
        precision="bf16-mixed" if torch.cuda.is_available() else "32-true",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, data)
    return timer.epochs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 tracks of 6 s, 3 s crops")
    parser.add_argument("--tracks", type=int, default=None, help="training tracks (default 256)")
    parser.add_argument("--val-tracks", type=int, default=None, help="default tracks / 8")
    parser.add_argument("--unique", type=int, default=None, help="distinct MP3s (default 16)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (quick: 8)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--model", choices=["default", "tiny"], default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    args.tracks = args.tracks or (8 if args.quick else 256)
    args.val_tracks = args.val_tracks or max(4, args.tracks // 8)
    args.batch_size = args.batch_size or (8 if args.quick else 32)
    args.workers = default_workers() if args.workers is None else args.workers
    args.model = args.model or ("default" if cuda and not args.quick else "tiny")
    args.window = 3.0 if args.quick else 10.0
    seconds = 6.0 if args.quick else 30.0
    model_kwargs = TINY if args.model == "tiny" else {}
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    result: dict = {
        "benchmark": "fit",
        "quick": args.quick,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": args.model,
        "train_tracks": args.tracks,
        "val_tracks": args.val_tracks,
        "track_seconds": seconds,
        "window_seconds": args.window,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        per_genre = {"training": args.tracks // 4, "validation": args.val_tracks // 4, "test": 1}
        unique = args.unique or (4 if args.quick else 16)
        meta, audio = make_corpus(Path(tmp), per_genre, seconds, default_workers(), unique)
        result["runs"]["stream"] = run(meta, audio, None, args, model_kwargs)
        result["runs"]["cache"] = run(meta, audio, str(Path(tmp) / "cache"), args, model_kwargs)
    last = {name: epochs[-1] for name, epochs in result["runs"].items()}
    result["cached_epoch_speedup"] = round(
        last["stream"]["train_s"] / max(last["cache"]["train_s"], 1e-9), 2
    )
    if cuda:
        result["targets"] = {"cached_train_epoch_s": {"target": 10.0, "measured": last["cache"]["train_s"],
                                                      "for_tracks": args.tracks}}  # fmt: skip
    print(json.dumps(result))
    print(
        f"# fit, {args.tracks} tracks, {args.model} model on {result['device']}, last epoch: "
        f"streamed {last['stream']['train_clips_per_s']} clips/s ({last['stream']['train_s']} s), "
        f"cached {last['cache']['train_clips_per_s']} clips/s ({last['cache']['train_s']} s); "
        f"first cached epoch {result['runs']['cache'][0]['train_s']} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
