"""Clip embeddings: the trunk's pooled features, per clip, through the windows of inference.

    genretag embed --ckpt best.ckpt --config configs/freesound.yaml --out emb.npy
    genretag embed --ckpt best.ckpt ~/sounds --out emb.npy

A clip is cut into the windows ``test`` and ``tag`` score (genretag.inference.windows, padded the
checkpoint's way); each window goes through the front-end and the trunk to its pooled feature
vector (D,) (the head's input); a clip's embedding is the mean of its windows' vectors, as its
scores are the mean of its windows' probabilities. Writes ``X.npy`` (N, D) float32 and an index
``X.csv`` (one row per line of the array): clip (the file name for FSDKaggle2018, else the path),
path, stage (train/val/test, or empty), label (the given label, empty if unknown), verified
(1/0, empty if unknown). ``genretag spread-labels`` reads them.

:class:`EmbeddingProjector` (a callback) writes the validation embeddings of the best epoch so
far to TensorBoard's projector, labelled, each time the monitored metric improves.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader

from genretag import tensorboard
from genretag.data.datasets import AudioFiles, ClipList, EvalClips, collate
from genretag.errors import CommandParser, ConfigError, run_command
from genretag.inference import clip_scores
from genretag.io import atomic_write
from genretag.tagger import options

log = logging.getLogger(__name__)

FREESOUND_DATA = "genretag.data.datamodules.FreesoundDataModule"


def pooled_features(model: Any, audio: Tensor) -> Tensor:
    """Windows (N, T) at the model's rate -> the trunk's pooled features (N, D) float32."""
    return model.trunk(model.frontend(audio)).float()


@torch.inference_mode()
def clip_embeddings(
    model: Any,
    clips: ClipList,
    batch_size: int = 16,
    workers: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, list[bool]]:
    """(embeddings (N, D) float32 in ``clips``' order, ok (N,): False where a file failed).

    A clip that cannot be decoded gets a row of NaN (and ok False), named in a warning.
    """
    model = model.to(device).eval()
    hp = model.hparams
    source = AudioFiles(int(hp["sample_rate"]))
    dataset = EvalClips(clips, source, float(hp["window_seconds"]), hp.get("pad_mode") or "zero")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    rows: dict[str, np.ndarray] = {}
    for batch in loader:
        for path, reason in batch["bad"]:
            log.warning("embed: skipped %s: %s", path, reason)
        if not batch["key"]:
            continue
        features = pooled_features(model, batch["audio"].to(device))
        per_clip = clip_scores(features, batch["clip"], len(batch["key"])).cpu().numpy()
        rows.update(zip(batch["key"], per_clip, strict=True))
    width = model.trunk.out_features
    out = np.full((len(clips), width), np.nan, np.float32)
    ok = [key in rows for key in clips.keys]
    for i, key in enumerate(clips.keys):
        if key in rows:
            out[i] = rows[key]
    return out, ok


def freesound_rows(data: Any, stages: Sequence[str]) -> pd.DataFrame:
    """The index rows (clip, path, stage, label, verified) of a FreesoundDataModule's stages."""
    index = data.index
    parts = []
    if {"train", "val"} & set(stages):
        train = index.train
        stage = np.where(train["val"], "val", "train")
        frame = pd.DataFrame(
            {
                "clip": train["fname"],
                "path": [str(index.layout.train_audio / n) for n in train["fname"]],
                "stage": stage,
                "label": train["label"],
                "verified": train["verified"].astype(int).astype(str),
            }
        )
        parts.append(frame[frame["stage"].isin(stages)])
    if "test" in stages:
        test = index.test
        parts.append(
            pd.DataFrame(
                {
                    "clip": test["fname"],
                    "path": [str(index.layout.test_audio / n) for n in test["fname"]],
                    "stage": "test",
                    "label": test["label"],
                    "verified": "",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def data_from_config(config: str | Path, root: str | None = None) -> Any:
    """The FreesoundDataModule a genretag YAML config describes (read as data: only that class).

    ``root`` replaces ``data.init_args.root`` (and any ``demo_root``).
    """
    from genretag.data.datamodules import FreesoundDataModule

    try:
        settings = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(
            f"--config: {config} cannot be read ({error.__class__.__name__})"
        ) from None
    data = settings.get("data") or {}
    if data.get("class_path") != FREESOUND_DATA:
        raise ConfigError(
            f"--config: {config}: data.class_path is {data.get('class_path')!r}; embed reads "
            f"{FREESOUND_DATA} configs (give audio PATHS for anything else)"
        )
    init = dict(data.get("init_args") or {})
    if root is not None:
        init["root"], init["demo_root"] = root, None
    try:
        return FreesoundDataModule(**init)
    except TypeError as error:
        raise ConfigError(f"--config: {config}: data.init_args: {error}") from None


def write_embeddings(
    out: Path, index_csv: Path, embeddings: np.ndarray, rows: pd.DataFrame
) -> None:
    """``out`` (.npy, (N, D) float32) and ``index_csv`` (N rows), each written atomically."""
    atomic_write(out, lambda f: np.save(f, embeddings), "the embeddings ")
    atomic_write(index_csv, rows.to_csv(index=False), "the embedding index ")


# -- TensorBoard projector -----------------------------------------------------------------------
class EmbeddingProjector(pl.Callback):
    """The validation clips' embeddings, labelled, in TensorBoard's projector at the best epoch.

    During validation a forward hook on the trunk keeps each window's pooled features, averaged
    per clip as in :func:`clip_embeddings`; when ``monitor`` improves (``mode`` max or min) they
    go to ``writer.add_embedding`` (tag ``val/embedding``) with each clip's label as metadata.
    """

    def __init__(self, monitor: str = "val/map3", mode: str = "max", max_clips: int = 5000):
        self.monitor, self.mode, self.max_clips = monitor, mode, max_clips
        self.best: float | None = None
        self._features: list[Tensor] = []
        self._labels: list[str] = []
        self._captured: Tensor | None = None
        self._hook: Any = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._features, self._labels = [], []

        def keep(module: Any, inputs: Any, output: Tensor) -> None:
            self._captured = output.detach().float()

        self._hook = pl_module.trunk.register_forward_hook(keep)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        features, self._captured = self._captured, None
        if features is None or not batch["key"] or len(self._labels) >= self.max_clips:
            return
        clip = batch.get("clip")
        n = len(batch["key"])
        per_clip = features if clip is None else clip_scores(features, clip, n)
        self._features.append(per_clip.cpu())
        labels = list(pl_module.labels)
        for target in batch["target"].cpu():
            if target.dim() == 0:
                self._labels.append(labels[int(target)])
            else:
                self._labels.append(";".join(labels[i] for i in target.nonzero().flatten()))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or not self._features:
            return
        value = float(value)
        better = self.best is None or (
            value > self.best if self.mode == "max" else value < self.best
        )
        if not better or math.isnan(value):
            return
        self.best = value
        writer = tensorboard.writer(pl_module)
        if writer is None:
            return
        mat = torch.cat(self._features)
        writer.add_embedding(
            mat,
            metadata=self._labels[: len(mat)],
            tag="val/embedding",
            global_step=trainer.global_step,
        )
        log.info(
            "val embeddings of %d clips to TensorBoard's projector (%s=%.4f)",
            len(mat),
            self.monitor,
            value,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")


# -- command ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="genretag embed",
        description="Write each clip's embedding (the trunk's pooled features) and an index CSV.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="audio files or folders (or --config)")
    p.add_argument("--ckpt", required=True, metavar="FILE", help="a genretag checkpoint")
    p.add_argument("--config", metavar="FILE", help="a Freesound config: embed its corpus")
    p.add_argument("--root", metavar="DIR", help="with --config: the corpus (data.root)")
    p.add_argument(
        "--stages", default="train,val", help="with --config: train,val,test (default train,val)"
    )
    p.add_argument("--out", required=True, type=Path, metavar="X.npy")
    p.add_argument("--index", type=Path, metavar="X.csv", help="default: --out with .csv")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per batch")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="decoding processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``genretag embed ...``; errors are one line (genretag.errors.run_command)."""
    return run_command("embed", _main, argv)


def _main(argv: list[str]) -> int:
    """``genretag embed ...``: 0 when every clip was embedded, 1 when some failed, 2 usage."""
    from genretag.task import load_model

    args = build_parser().parse_args(argv)
    if bool(args.paths) == bool(args.config):
        raise ConfigError("embed: give either --config FILE or audio PATHS (not both)")
    model = load_model(args.ckpt)
    device = options.device(args.device)  # the rules of `genretag tag --device`
    if args.config:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = set(stages) - {"train", "val", "test"}
        if unknown:
            raise ConfigError(f"--stages: {', '.join(sorted(unknown))}: use train, val, test")
        rows = freesound_rows(data_from_config(args.config, args.root), stages)
    else:
        from genretag.tagger.scan import scan

        files = [str(p) for p in scan(args.paths)]
        if not files:
            raise ConfigError(f"embed: no audio files in {', '.join(args.paths)}")
        rows = pd.DataFrame(
            {"clip": files, "path": files, "stage": "", "label": "", "verified": ""}
        )
    clips = ClipList(
        paths=list(rows["path"]), keys=list(rows["clip"]), targets=np.zeros(len(rows), np.int64)
    )
    embeddings, ok = clip_embeddings(model, clips, args.batch_size, args.workers, device)
    index = args.index or args.out.with_suffix(".csv")
    write_embeddings(args.out, index, embeddings, rows.assign(ok=np.array(ok, int)))
    failed = len(ok) - sum(ok)
    print(
        f"wrote {len(rows)} embeddings ({embeddings.shape[1]} dims) to {args.out} and {index}"
        + (f"; {failed} clips FAILED (NaN rows, ok=0)" if failed else "")
    )
    return 1 if failed else 0
