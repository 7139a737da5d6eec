"""Self-training: pseudo-label unlabelled clips with the model, keep the sure ones, fine-tune.

    genretag self-train --config configs/freesound.yaml --ckpt best.ckpt --out runs/st \
        --unlabelled test --rounds 3 --start 0.7 --step 0.1 --stop 0.9 --pseudo-weight 0.5

Round r (0, 1, ...): the current checkpoint (round 0: ``--ckpt``, several for an ensemble)
scores every unlabelled clip through genretag.inference (the windows and averaging of ``test``
and ``tag``); the clips whose top probability is at least ``min(start + r * step, stop)`` become
pseudo-labelled training clips (``OUT/round_r/pseudo.csv``: path, label, confidence), added to the
corpus's own training clips with loss weight ``pseudo_weight`` (data.pseudo); the model is then
fine-tuned from the current checkpoint for ``epochs`` epochs, its best epoch by val/map3 becoming
the next round's checkpoint. Unlabelled clips: ``test`` (the corpus's test audio, its labels
unused: transductive, as the competition's winners did) or a folder of audio.

Every round logs to its own TensorBoard version (``OUT/self_train/round_r``). After each round
``OUT/self_train.json`` is replaced atomically (rounds done, the checkpoint, each round's
threshold, clip count and val/map3): a run killed at any point, re-run with the same arguments,
starts again at the first round not done (a half-done round is redone from its start).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genretag import system
from genretag.data.datasets import ClipList
from genretag.errors import CommandParser, ConfigError, run_command
from genretag.inference import Combine, Predictor, load_predictor, score_files
from genretag.io import atomic_write

log = logging.getLogger(__name__)

STATE = "self_train.json"


@dataclass(frozen=True)
class Schedule:
    """Rounds and the rising confidence threshold (see the module docstring)."""

    rounds: int = 3
    start: float = 0.7
    step: float = 0.1
    stop: float = 0.9
    pseudo_weight: float = 0.5
    epochs: int = 3

    def threshold(self, round_: int) -> float:
        """The least top probability a pseudo-labelled clip needs in round ``round_``."""
        return min(self.start + round_ * self.step, self.stop)


def score_clips(
    predictor: Predictor, paths: Sequence[str], batch_size: int = 16, workers: int = 0
) -> np.ndarray:
    """Clip probabilities (N, C) of the audio files ``paths`` (NaN rows for undecodable ones),
    through the one batched scorer (genretag.inference.score_files)."""
    clips = ClipList(list(paths), list(paths), np.zeros(len(paths), np.int64))
    return score_files(predictor, clips, batch_size, workers)[0]


def pseudo_labels(
    paths: Sequence[str], probs: np.ndarray, labels: Sequence[str], threshold: float
) -> pd.DataFrame:
    """The clips whose top probability is >= ``threshold``: path, label, confidence."""
    top = np.nan_to_num(probs, nan=-1.0).argmax(1)
    confidence = np.nan_to_num(probs, nan=-1.0).max(1)
    keep = confidence >= threshold
    return pd.DataFrame(
        {
            "path": np.asarray(paths, dtype=object)[keep],
            "label": np.asarray(labels, dtype=object)[top[keep]],
            "confidence": confidence[keep].round(4),
        }
    )


def fine_tune(
    ckpt: str,
    data: Any,
    folder: Path,
    round_: int,
    epochs: int,
    lr: float | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> tuple[str, float | None]:
    """Fine-tune ``ckpt`` on ``data`` for ``epochs``; (its best checkpoint, best val/map3).

    Logs to TensorBoard version ``folder/self_train/round_<round_>`` (removed first if a killed
    run left it half written).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    from genretag.resume import RandomState, use_atomic_checkpoints
    from genretag.task import load_model

    version = folder / "self_train" / f"round_{round_}"
    if version.exists():
        shutil.rmtree(version)
    model = load_model(ckpt).train()  # load_model gives eval mode; Lightning keeps modes
    if lr is not None:
        model.hparams.lr = lr
    best = ModelCheckpoint(
        dirpath=version / "checkpoints", monitor="val/map3", mode="max", filename="best"
    )
    last = ModelCheckpoint(dirpath=version / "checkpoints", filename="last")
    settings = {
        "max_epochs": epochs,
        "accelerator": "auto",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 5,
        "logger": TensorBoardLogger(folder, name="self_train", version=f"round_{round_}"),
        **(trainer_kwargs or {}),
    }
    trainer = pl.Trainer(callbacks=[best, last, RandomState()], **settings)
    use_atomic_checkpoints(trainer)
    trainer.fit(model, data)
    score = None if best.best_model_score is None else float(best.best_model_score)
    # no validation (limit_val_batches=0): the last epoch
    return best.best_model_path or last.best_model_path, score


def _read_state(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"{path}: unreadable self-training state; remove it to start over"
        ) from None
    if state.get("settings") != settings:
        raise ConfigError(
            f"{path}: holds a self-training run with other settings ({state.get('settings')}); "
            f"give another --out, or remove it to start over"
        )
    return state


def self_train(
    ckpts: Sequence[str],
    unlabelled: Sequence[str],
    make_data: Callable[[str], Any],
    folder: str | Path,
    schedule: Schedule = Schedule(),
    combine: Combine = "arithmetic",
    lr: float | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the rounds; returns the final state (``ckpt``: the last round's best).

    ``make_data(pseudo_csv)`` builds the round's data module with that pseudo-label list.
    ``identity``: what else makes this run this run (config, unlabelled source), kept in the
    state file so that a different run is not resumed from it.
    """
    folder = Path(folder)
    settings = {
        "ckpts": [str(c) for c in ckpts],
        "combine": combine,
        "schedule": asdict(schedule),
        **(identity or {}),
    }
    state_path = folder / STATE
    state = _read_state(state_path, settings) or {
        "settings": settings,
        "round": 0,
        "ckpt": None,
        "history": [],
    }
    if state["round"]:
        log.info("self-training: resuming at round %d of %d", state["round"], schedule.rounds)
    device = torch.device(device)
    while state["round"] < schedule.rounds:
        r = state["round"]
        members = [state["ckpt"]] if state["ckpt"] else list(ckpts)
        predictor = load_predictor(members, device, combine)
        threshold = schedule.threshold(r)
        probs = score_clips(predictor, unlabelled)
        table = pseudo_labels(unlabelled, probs, predictor.labels, threshold)
        csv = folder / f"round_{r}" / "pseudo.csv"
        atomic_write(csv, table.to_csv(index=False), "the pseudo labels ")
        log.info(
            "self-training round %d: %d of %d clips at >= %.2f",
            r,
            len(table),
            len(probs),
            threshold,
        )
        start = members[0]
        best, score = fine_tune(
            start, make_data(str(csv)), folder, r, schedule.epochs, lr, trainer_kwargs
        )
        state["history"].append(
            {
                "round": r,
                "threshold": threshold,
                "pseudo": len(table),
                "val_map3": score,
                "ckpt": best,
            }
        )
        state["ckpt"], state["round"] = best, r + 1
        atomic_write(state_path, json.dumps(state, indent=1), "the self-training state ")
    return state


# -- command ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="genretag self-train", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--config", required=True, metavar="FILE", help="the Freesound config of the training")
    add("--root", metavar="DIR", help="the corpus (replaces the config's data.root)")
    add("--ckpt", action="append", required=True, metavar="FILE",
        help="round 0's checkpoint; repeat for an ensemble (fine-tuning starts from the first)")  # fmt: skip
    add("--combine", choices=("arithmetic", "geometric"), default="arithmetic")
    add("--out", required=True, type=Path, metavar="DIR", help="rounds, logs and the state file")
    add("--unlabelled", default="test", metavar="test|DIR", help="clips to pseudo-label")
    add("--rounds", type=int, default=3)
    add("--start", type=float, default=0.7, help="round 0's threshold")
    add("--step", type=float, default=0.1, help="threshold rise per round")
    add("--stop", type=float, default=0.9, help="the highest threshold")
    add("--pseudo-weight", type=float, default=0.5, help="loss weight of a pseudo-labelled clip")
    add("--epochs", type=int, default=3, help="fine-tuning epochs per round")
    add("--lr", type=float, help="fine-tuning learning rate (default: the checkpoint's)")
    add("--limit-batches", type=float, help="limit_train/val_batches (quick checks)")
    add("--device", default="auto", help="auto, cpu, cuda ...")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``genretag self-train ...``; errors are one line (genretag.errors.run_command)."""
    return run_command("self-train", _main, argv)


def _main(argv: list[str]) -> int:
    """``genretag self-train ...``; prints each round's line and the final checkpoint."""
    from genretag.commands.embed import data_from_config

    args = build_parser().parse_args(argv)
    if args.rounds < 1 or not 0 < args.pseudo_weight <= 1:
        raise ConfigError("self-train: --rounds must be >= 1 and --pseudo-weight in (0, 1]")
    if args.unlabelled == "test":
        index = data_from_config(args.config, args.root).index
        paths = [str(index.layout.test_audio / n) for n in index.test["fname"]]
    else:
        from genretag.tagger.scan import scan

        paths = [str(p) for p in scan([args.unlabelled])]
    if not paths:
        raise ConfigError(f"--unlabelled: no audio clips in {args.unlabelled}")

    def make_data(pseudo: str) -> Any:
        data = data_from_config(args.config, args.root)
        data.pseudo, data.pseudo_weight = pseudo, args.pseudo_weight
        return data

    limits = {}
    if args.limit_batches is not None:
        n = int(args.limit_batches) if args.limit_batches >= 1 else args.limit_batches
        limits = {"limit_train_batches": n, "limit_val_batches": n}
    device = str(system.device(args.device))  # the rules of `genretag tag --device`
    schedule = Schedule(
        args.rounds, args.start, args.step, args.stop, args.pseudo_weight, args.epochs
    )
    state = self_train(
        args.ckpt,
        paths,
        make_data,
        args.out,
        schedule,
        args.combine,
        args.lr,
        limits,
        device,
        identity={"config": str(args.config), "root": args.root, "unlabelled": args.unlabelled},
    )
    for row in state["history"]:
        print(
            f"round {row['round']}: {row['pseudo']} pseudo-labelled clips at >= "
            f"{row['threshold']:.2f}, val/map3 {row['val_map3']}"
        )
    print(f"self-trained checkpoint: {state['ckpt']}")
    return 0
