"""The Freesound recipe, step by step, on the synthetic FSD-shaped corpus: does each step help?

    python benchmarks/freesound_recipe.py [--seeds 0 1 2] [--epochs 6] [--quick]

Per seed: a corpus from genretag.synth.freesound (``--classes`` of the 41; ``--train`` clips per class of
which ``--verified`` manually verified; 30 % of the unverified clips carry another class's sound
and manually_verified 0, seeded), the demo model of configs/freesound_demo.yaml (1 s windows),
and test mAP@3 (scored through genretag.inference, as ``test`` and ``tag`` score) of:

* ``verified``: the verified clips only; ``all``: every clip; ``weighted``: unverified at 0.5;
* ``trusted``: verified + the unverified clips label spreading confirmed (embeddings of the
  ``verified`` model, genretag.commands.spreading defaults: rbf, gamma 20, alpha 0.2, L2-normalised);
* ``self_train``: ``trusted`` fine-tuned for 2 rounds on pseudo-labelled test audio
  (thresholds ``--st-start`` and 0.1 more; pseudo weight 0.5; lr 0.001; genretag.commands.selftrain);
* ``folds5``: the ``trusted`` recipe trained on 5 stratified folds, the 5 models averaged
  (arithmetic mean of probabilities, genretag.inference.Predictor).

Also how many of the planted wrong labels spreading catches (``trusted = no``): precision and
recall against synthetic_truth.csv. Prints one JSON object (per seed, mean and std over seeds).
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

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from genretag.commands.embed import clip_embeddings, freesound_rows
from genretag.commands.selftrain import Schedule, score_clips, self_train
from genretag.commands.spreading import catch_rate, trusted_table
from genretag.data.datamodules import FreesoundDataModule
from genretag.inference import load_predictor
from genretag.metrics import map_at_k
from genretag.network import Network
from genretag.synth.freesound import TRUTH_CSV, synthesize
from genretag.task import TaggingTask

log = logging.getLogger("freesound_recipe")
DEMO_MODEL = {"channels": (16, 32, 32, 32), "gru_hidden": 32, "gru_layers": 1, "dropout": 0.1}
CONDITIONS = ("verified", "all", "weighted", "trusted", "self_train", "folds5")


class Run:
    """One seed's corpus and the settings every training of it shares."""

    def __init__(self, root: Path, seed: int, args: argparse.Namespace) -> None:
        self.root, self.seed, self.args = root, seed, args
        self.corpus = synthesize(
            root / "corpus",
            train_per_class=args.train,
            verified_per_class=args.verified,
            test_per_class=args.test,
            seconds=(0.3, 2.0),
            long_clips=0,
            label_noise=0.3,
            sr=16_000,
            seed=seed,
            n_classes=args.classes,
        )
        self.count = 0

    def data(self, **kwargs: Any) -> FreesoundDataModule:
        settings = {
            "root": str(self.corpus),
            "window_seconds": 1.0,
            "batch_size": 8,
            "num_workers": 0,
            "val_fraction": 0.2,
            "seed": self.seed,
            "pin_memory": False,
            **kwargs,
        }
        return FreesoundDataModule(**settings)

    def trainer(self, folder: Path, epochs: int, checkpoint: ModelCheckpoint) -> pl.Trainer:
        return pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            callbacks=[checkpoint],
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=folder,
        )

    def train(self, **data_kwargs: Any) -> str:
        """A fresh demo model trained on this corpus; the best checkpoint by val/map3."""
        self.count += 1
        pl.seed_everything(self.seed * 100 + self.count, workers=True, verbose=False)
        data = self.data(**data_kwargs)
        model = TaggingTask(
            data.label_names,
            task="multiclass",
            window_seconds=1.0,
            pad_mode="loop",
            lr=0.003,
            label_smoothing=0.1,
            **DEMO_MODEL,
        )
        folder = self.root / f"run_{self.count}"
        best = ModelCheckpoint(dirpath=folder, monitor="val/map3", mode="max", filename="best")
        self.trainer(folder, self.args.epochs, best).fit(model, data)
        return best.best_model_path

    def test_paths(self) -> tuple[list[str], torch.Tensor]:
        index = self.data().index
        paths = [str(index.layout.test_audio / n) for n in index.test["fname"]]
        return paths, torch.as_tensor(index.test["target"].to_numpy())

    def map3(self, ckpts: list[str]) -> float:
        """Test mAP@3 of a checkpoint or the arithmetic-mean ensemble of several."""
        paths, targets = self.test_paths()
        probs = score_clips(load_predictor(ckpts, torch.device("cpu")), paths)
        return float(map_at_k(torch.as_tensor(probs), targets, 3))


def one_seed(seed: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    run = Run(scratch / f"seed_{seed}", seed, args)
    out: dict[str, Any] = {"seed": seed, "map3": {}, "seconds": {}}

    def timed(name: str, ckpts: list[str], began: float) -> None:
        out["map3"][name] = round(run.map3(ckpts), 4)
        out["seconds"][name] = round(time.perf_counter() - began, 1)
        log.warning("seed %d %s: test mAP@3 %.4f (%.0f s)", seed, name, out["map3"][name],
                    out["seconds"][name])  # fmt: skip

    t = time.perf_counter()
    verified = run.train(verified="verified")
    timed("verified", [verified], t)
    t = time.perf_counter()
    timed("all", [run.train(verified="all")], t)
    t = time.perf_counter()
    timed("weighted", [run.train(verified="weighted")], t)

    # label spreading over the verified model's embeddings of the training clips
    t = time.perf_counter()
    data = run.data()
    rows = freesound_rows(data, ["train", "val"])
    from genretag.data.datasets import ClipList

    clips = ClipList(list(rows["path"]), list(rows["clip"]), np.zeros(len(rows), np.int64))
    embeddings, _ = clip_embeddings(Network.load(verified), clips)
    table = trusted_table(rows, embeddings)
    trusted_csv = run.root / "trusted.csv"
    table.to_csv(trusted_csv, index=False)
    truth = pd.read_csv(run.corpus / TRUTH_CSV)
    out["spreading"] = catch_rate(table, set(truth["fname"][truth["wrong"]]))
    trusted = run.train(verified="verified", trusted=str(trusted_csv))
    timed("trusted", [trusted], t)

    t = time.perf_counter()
    paths, _ = run.test_paths()
    state = self_train(
        [trusted],
        paths,
        lambda pseudo: run.data(verified="verified", trusted=str(trusted_csv), pseudo=pseudo),
        run.root / "self_train",
        Schedule(2, args.st_start, 0.1, args.st_start + 0.1, 0.5, args.ft_epochs),
        lr=0.001,
        trainer_kwargs={"accelerator": "cpu", "logger": False},
    )
    out["self_train_rounds"] = [
        {k: row[k] for k in ("threshold", "pseudo", "val_map3")} for row in state["history"]
    ]
    timed("self_train", [state["ckpt"]], t)

    t = time.perf_counter()
    members = [
        run.train(verified="verified", trusted=str(trusted_csv), folds=5, fold=i) for i in range(5)
    ]
    timed("folds5", members, t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--classes", type=int, default=10, help="classes in the corpus (of 41)")
    p.add_argument("--train", type=int, default=12, help="training clips per class")
    p.add_argument("--verified", type=int, default=5, help="of which manually verified")
    p.add_argument("--test", type=int, default=4, help="test clips per class")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--st-start", type=float, default=0.5, help="round 0's threshold (+0.1 next)")
    p.add_argument("--ft-epochs", type=int, default=2, help="fine-tuning epochs per round")
    p.add_argument("--quick", action="store_true", help="one seed, 2 epochs (a smoke run)")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.ft_epochs = args.seeds[:1], 2, 1
    logging.basicConfig(level=logging.WARNING)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        seeds = []
        for seed in args.seeds:  # each seed's result on stderr as soon as it is done
            seeds.append(one_seed(seed, args, Path(scratch)))
            log.warning("seed %d: %s", seed, json.dumps(seeds[-1]))
    table = {}
    for name in CONDITIONS:
        values = np.array([s["map3"][name] for s in seeds])
        table[name] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4)}
    catches = {
        k: round(float(np.nanmean([s["spreading"][k] for s in seeds])), 4)
        for k in ("precision", "recall")
    }
    print(
        json.dumps(
            {
                "settings": vars(args),
                "test_map3": table,
                "spreading_catches_wrong_labels": catches,
                "per_seed": seeds,
                "seconds": round(time.perf_counter() - began, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
