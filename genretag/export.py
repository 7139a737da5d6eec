"""``genretag export CKPT --out model.ckpt``: the file to share, with only what tagging needs.

A training checkpoint holds the optimizer's moments (two more copies of the weights with AdamW),
the loops' and callbacks' states and the random state; an exported file holds only

* ``state_dict``: every tensor of the model (trunk, head, front-end buffers), unchanged;
* ``hyper_parameters``: the model's settings, plain values (paths as strings, no ``init_from``);
* ``model_card``: what it was trained on and how well it did (see :func:`model_card`).

It loads with :func:`genretag.checkpoint.load_checkpoint` (plain data, nothing runs) and serves
``genretag tag --ckpt`` and ``--model.init_from`` like the checkpoint it came from, about 3x
smaller. It is written to a temporary file beside the target, fsynced and renamed into place.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from genretag.checkpoint import load_checkpoint, plain
from genretag.errors import CommandParser, ConfigError, run_command
from genretag.io import atomic_write

log = logging.getLogger(__name__)

EXAMPLE = """example:
  genretag export lightning_logs/version_3/checkpoints/best.ckpt --out genres-small.ckpt
  genretag tag ~/Music --ckpt genres-small.ckpt --out tags.csv
"""
# Data settings worth knowing about a model (no paths: a card is shared).
DATA_KEYS = ("subset", "labels", "min_tracks", "verified", "val_fraction", "window_seconds")


def _version() -> str:
    try:
        return importlib.metadata.version("genretag")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _scores(checkpoint: dict[str, Any]) -> dict[str, float]:
    """{monitor: best_model_score} of each ModelCheckpoint state that monitored something."""
    scores = {}
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if not str(name).startswith("ModelCheckpoint") or not isinstance(state, dict):
            continue
        monitor, score = state.get("monitor"), state.get("best_model_score")
        if monitor and score is not None:
            scores[str(monitor)] = float(score)
    return scores


def _data_settings(source: Path) -> dict[str, Any]:
    """The data module and its selection settings, from the run's config.yaml if it is there.

    LightningCLI writes ``lightning_logs/version_N/config.yaml``; the checkpoint itself does not
    say which data it was trained on. Read with yaml.safe_load (data only).
    """
    for config in (source.parent.parent / "config.yaml", source.parent / "config.yaml"):
        if not config.is_file():
            continue
        try:
            data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            return {}
        if not isinstance(data, dict):
            return {}
        settings = data.get("init_args") or {}
        found = {"module": str(data.get("class_path", "")).rpartition(".")[2]}
        found |= {k: settings[k] for k in DATA_KEYS if settings.get(k) is not None}
        if settings.get("demo_root"):
            found["demo"] = True
        return plain(found)
    return {}


def model_card(checkpoint: dict[str, Any], source: str | os.PathLike) -> dict[str, Any]:
    """A small dict about the model in ``checkpoint`` (a training checkpoint read from ``source``).

    Keys: ``task``, ``labels`` (count), ``data`` (module, subset ... when the run's config.yaml is
    beside it), ``metrics`` ({monitor: best score} from its ModelCheckpoint states), ``epoch``,
    ``global_step``, ``transferred_from`` (file name, after ``init_from``), ``genretag_version``,
    ``source`` (file name), ``exported`` (UTC date and time, ISO 8601).
    """
    hparams = checkpoint["hyper_parameters"]
    card: dict[str, Any] = {
        "task": str(hparams["task"]),
        "labels": len(hparams["labels"]),
        "data": _data_settings(Path(source)),
        "metrics": _scores(checkpoint),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "genretag_version": _version(),
        "source": Path(source).name,
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if hparams.get("init_from"):
        card["transferred_from"] = Path(str(hparams["init_from"])).name
    earlier = checkpoint.get("model_card")  # exporting an exported file keeps its history
    if isinstance(earlier, dict):
        card = {**earlier, "genretag_version": card["genretag_version"], "source": card["source"]}
        card["exported"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
    return plain(card)


def exported(checkpoint: dict[str, Any], source: str | os.PathLike) -> dict[str, Any]:
    """The shareable subset of a genretag checkpoint: state_dict, hyper_parameters, model_card."""
    hparams = {
        k: v for k, v in checkpoint["hyper_parameters"].items() if not str(k).startswith("_")
    }  # LightningCLI's _instantiator (a function to import) is not for sharing
    hparams["init_from"] = None  # a path on the trainer's disk; the trunk is in the weights
    return {
        "state_dict": {
            k: v.detach().cpu().contiguous() for k, v in checkpoint["state_dict"].items()
        },
        "hyper_parameters": plain(hparams),
        "model_card": model_card(checkpoint, source),
    }


def export(source: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the exported form of checkpoint ``source`` to ``out``; returns what was written.

    ConfigError (one line) when ``source`` is not a genretag checkpoint, when ``out`` is
    ``source`` itself or a folder, or when the written file does not read back.
    """
    source, out = Path(source), Path(out)
    if out.is_dir():
        raise ConfigError(
            f"--out {out}: is a folder; give a file name such as {out / 'model.ckpt'}"
        )
    if out.exists() and source.exists() and out.samefile(source):
        raise ConfigError(f"--out {out}: is the checkpoint being exported; give another name")
    content = exported(load_checkpoint(source), source)
    atomic_write(out, lambda f: torch.save(content, f))
    back = load_checkpoint(out)  # the file a user is handed loads as data
    if back["state_dict"].keys() != content["state_dict"].keys():
        raise ConfigError(f"--out {out}: the written file does not read back whole; export again")
    return content


def describe_card(checkpoint: dict[str, Any]) -> str:
    """A few lines about a checkpoint's model, for ``genretag tag --verbose``.

    From its ``model_card`` when exported, else from its hyper-parameters and callback states.
    """
    card = checkpoint.get("model_card")
    hparams = checkpoint.get("hyper_parameters", {})
    if not isinstance(card, dict):
        card = {
            "task": hparams.get("task"),
            "labels": len(hparams.get("labels") or ()),
            "metrics": _scores(checkpoint),
            "epoch": checkpoint.get("epoch"),
        }
    lines = [f"model: {card.get('task')}, {card.get('labels')} labels"]
    data = card.get("data") or {}
    if data:
        lines.append("data: " + ", ".join(f"{k}={v}" for k, v in data.items()))
    metrics = card.get("metrics") or {}
    if metrics:
        lines.append("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    trained = [f"epoch {card['epoch']}" if card.get("epoch") is not None else ""]
    if card.get("transferred_from"):
        trained.append(f"trunk from {card['transferred_from']}")
    if any(trained):
        lines.append("trained: " + ", ".join(t for t in trained if t))
    if card.get("license"):  # imported published models (genretag.pretrained)
        lines.append(f"license: {card['license']}")
    if card.get("exported"):
        lines.append(
            f"exported: {card['exported']} from {card.get('source')} "
            f"(genretag {card.get('genretag_version')})"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``genretag export`` command line."""
    parser = CommandParser(
        prog="genretag export",
        description="Write a shareable model file: weights, settings and a model card; no "
        "optimizer, loop or callback state. It loads as plain data (nothing in it runs).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ckpt", help="a checkpoint written by `genretag fit` (best.ckpt, ...)")
    parser.add_argument("--out", required=True, help="the file to write, e.g. model.ckpt")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``genretag export CKPT --out FILE``: 0 when written, 2 (one line) on a usage error."""
    return run_command("export", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    content = export(args.ckpt, args.out)
    before, after = os.path.getsize(args.ckpt), os.path.getsize(args.out)
    log.info("wrote %s: %.2f MB, %.1fx smaller than %s", args.out, after / 1e6, before / after,
             args.ckpt)  # fmt: skip
    print(describe_card(content))
    return 0
