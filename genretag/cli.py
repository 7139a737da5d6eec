"""``python -m genretag``: fit/validate/test/predict through LightningCLI, other commands our own.

    python -m genretag fit --config configs/demo.yaml
    python -m genretag test --config configs/fma_small.yaml --ckpt_path .../best.ckpt
    python -m genretag tag ~/Music --ckpt best.ckpt --out tags.csv
    python -m genretag download fma_small --to data/

A mistake the user can fix (a missing folder, a wrong setting, a checkpoint that does not fit)
is reported as one line naming the setting or path, with exit code 2; ``--verbose`` adds the
traceback. A full disk is one line too, with exit code 1. ``--ckpt_path last`` resumes from the
newest last.ckpt of the earlier runs (genretag.resume), which are written atomically.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

# Commands that are not Lightning's, and the module whose main(argv) -> int runs each.
OWN_COMMANDS = {
    "tag": ("genretag.tagger.command", "tag a music library with a trained checkpoint"),
    "download": ("genretag.commands.download", "download, verify and extract FMA or FSDKaggle2018"),
    "prepare": ("genretag.commands.prepare", "decode a dataset once into the decoded-audio cache"),
    "export": (
        "genretag.commands.export",
        "write a checkpoint made for sharing (weights, settings, card)",
    ),
    "pretrained": (
        "genretag.commands.pretrained",
        "convert published weights (musicnn) to a genretag checkpoint",
    ),
    "report": ("genretag.report", "one HTML page about a tag run's results"),
    "compare": (
        "genretag.commands.compare",
        "compare runs from their logs (lightning_logs/version_*)",
    ),
    "baseline": (
        "genretag.commands.baseline",
        "librosa features + logistic regression, logged as a run",
    ),
    "similar": (
        "genretag.commands.similar",
        "each file's nearest neighbours by sound; 'more like this' playlists",
    ),
    "embed": (
        "genretag.commands.embed",
        "write clip embeddings (the trunk's pooled features) + index",
    ),
    "spread-labels": (
        "genretag.commands.spreading",
        "label spreading: which unverified labels to trust",
    ),
    "self-train": (
        "genretag.commands.selftrain",
        "pseudo-label unlabelled clips, fine-tune, repeat",
    ),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
USAGE = f"""usage: genretag COMMAND [options]    (genretag COMMAND --help for each)

Lightning commands (configured by YAML, see configs/):
  fit        train a model                 validate   evaluate on the validation split
  test       evaluate on the test split    predict    write predictions for the test split
Other commands:
{chr(10).join(f"  {name:<13} {text}" for name, (_, text) in OWN_COMMANDS.items())}
"""


def lightning_cli(args: list[str]):
    """Run a Lightning command (fit/validate/test/predict); returns the finished LightningCLI.

    A ``--config`` overlay is merged onto its base first (genretag.configs)."""
    from pytorch_lightning import Trainer
    from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

    from genretag.data.datamodules import ClipDataModule
    from genretag.errors import ConfigError
    from genretag.resume import RandomState, resolve_last, use_atomic_checkpoints
    from genretag.task import TaggingTask, load_checkpoint

    class GenretagCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # The data decide what the model sees: labels, head type, rate and window length.
            for source, target in [
                ("data.label_names", "model.labels"),
                ("data.genre_tree", "model.genre_tree"),
                ("data.task", "model.task"),
                ("data.sample_rate", "model.sample_rate"),
                ("data.window_seconds", "model.window_seconds"),
                ("data.pad_mode", "model.pad_mode"),
            ]:
                parser.link_arguments(source, target, apply_on="instantiate")

        def instantiate_trainer(self, **kwargs: Any) -> Trainer:
            trainer = super().instantiate_trainer(**kwargs)
            use_atomic_checkpoints(trainer)  # a kill or a full disk never leaves half a .ckpt
            return trainer

        def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
            """A ``--ckpt_path`` file must be a genretag checkpoint (Lightning loads it next)."""
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path not in (None, "last", "best", "hpc") and "://" not in str(ckpt_path):
                try:
                    load_checkpoint(str(ckpt_path))
                except ConfigError as error:
                    raise ConfigError(
                        f"--ckpt_path: {error}; pass a .ckpt written by `genretag fit` "
                        f"(lightning_logs/version_N/checkpoints/)"
                    ) from None

        def _resolve_last(self) -> None:
            """``--ckpt_path last``: the newest last.ckpt of any earlier run (each run logs to a
            new version_N folder, and Lightning alone looks only in the new one)."""
            config = self.config_init[self.subcommand]
            if config.get("ckpt_path") == "last":
                config["ckpt_path"] = resolve_last(self.trainer)

        before_fit = before_validate = before_test = before_predict = _resolve_last

    import torch

    # `args` is sys.argv[1:] less --verbose: not a mistake to warn the user about on every run
    warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended", UserWarning)
    from genretag import configs

    return GenretagCLI(
        TaggingTask,
        ClipDataModule,
        subclass_mode_data=True,
        trainer_defaults={
            # bf16 mixed precision where a GPU is present (the front-end stays fp32 in the model)
            "precision": "bf16-mixed" if torch.cuda.is_available() else "32-true",
            "callbacks": [RandomState()],  # always on: a resumed run continues the same draws
        },
        args=configs.expand(args),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 some inputs failed, 2 usage/config).

    Errors become exit codes in genretag.errors.run_command, for every command alike.
    """
    from genretag import errors

    args = list(sys.argv[1:] if argv is None else argv)
    verbose, errors.VERBOSE = errors.VERBOSE, "--verbose" in args
    try:
        return _dispatch([a for a in args if a != "--verbose"])
    finally:
        errors.VERBOSE = verbose  # for this command only (tests call several in one process)


def _dispatch(args: list[str]) -> int:
    from genretag import errors

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command = args[0]
    if command in OWN_COMMANDS:
        module = importlib.import_module(OWN_COMMANDS[command][0])
        return int(module.main(args[1:]) or 0)
    if command not in LIGHTNING_COMMANDS:
        print(f"genretag: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    full_disk = "free some space and re-run with --ckpt_path last" if command == "fit" else ""
    again = "re-run with --ckpt_path last to resume" if command == "fit" else ""
    return errors.run_command(None, _lightning, args, again, full_disk)


def _lightning(args: list[str]) -> int:
    lightning_cli(args)
    return 0
