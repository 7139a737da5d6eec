"""Clip embeddings: the trunk's pooled features, per clip, through the windows of inference.

    genretag embed --ckpt best.ckpt --config configs/freesound.yaml --out emb.npy
    genretag embed --ckpt best.ckpt ~/sounds --out emb.npy

A clip is cut into the windows ``test`` and ``tag`` score (genretag.windows, padded the
checkpoint's way); each window goes through the front-end and the trunk to its pooled feature
vector (D,) (the head's input); a clip's embedding is the mean of its windows' vectors, as its
scores are the mean of its windows' probabilities. Writes ``X.npy`` (N, D) float32 and an index
``X.csv`` (one row per line of the array): clip (the file name for FSDKaggle2018, else the path),
path, stage (train/val/test, or empty), label (the given label, empty if unknown), verified
(1/0, empty if unknown). ``genretag spread-labels`` reads them.

The validation embeddings in TensorBoard's projector come from
:class:`genretag.tensorboard.EmbeddingProjector`, a training callback.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genretag import configs, system
from genretag.data.datasets import ClipList
from genretag.errors import CommandParser, ConfigError, run_command
from genretag.inference import Predictor, score_files
from genretag.io import atomic_write
from genretag.network import Network

log = logging.getLogger(__name__)

FREESOUND_DATA = "genretag.data.datamodules.FreesoundDataModule"


def clip_embeddings(
    network: Network,
    clips: ClipList,
    batch_size: int = 16,
    workers: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, list[bool]]:
    """(embeddings (N, D) float32 in ``clips``' order, ok (N,): False where a file failed).

    Each clip's embedding is its windows' pooled trunk features, averaged
    (genretag.inference.score_files); a clip that cannot be decoded gets a row of NaN.
    """
    predictor = Predictor([network.to(device).eval()])
    return score_files(predictor, clips, batch_size, workers, features=True)


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

    data = configs.read(config).get("data") or {}
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
    args = build_parser().parse_args(argv)
    if bool(args.paths) == bool(args.config):
        raise ConfigError("embed: give either --config FILE or audio PATHS (not both)")
    model = Network.load(args.ckpt)
    device = system.device(args.device)  # the rules of `genretag tag --device`
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
