"""``python -m genretag``: fit/validate/test/predict through LightningCLI, other commands our own.

    python -m genretag fit --config configs/demo.yaml
    python -m genretag test --config configs/fma_small.yaml --ckpt_path .../best.ckpt
    python -m genretag tag ~/Music --ckpt best.ckpt --out tags.csv
    python -m genretag download fma_small --to data/

A mistake the user can fix (a missing folder, a wrong setting, a checkpoint that does not fit)
is reported as one line naming the setting or path, with exit code 2; ``--verbose`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

# Commands that are not Lightning's, and the module whose main(argv) -> int runs each.
OWN_COMMANDS = {
    "tag": ("genretag.tagging", "tag a music library with a trained checkpoint"),
    "download": ("genretag.data.download", "download, verify and extract FMA or FSDKaggle2018"),
    "prepare": ("genretag.data.cache", "decode a dataset once into the decoded-audio cache"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
USAGE = f"""usage: genretag COMMAND [options]    (genretag COMMAND --help for each)

Lightning commands (configured by YAML, see configs/):
  fit        train a model                 validate   evaluate on the validation split
  test       evaluate on the test split    predict    write predictions for the test split
Other commands:
{chr(10).join(f"  {name:<10} {text}" for name, (_, text) in OWN_COMMANDS.items())}
"""


def lightning_cli(args: list[str]):
    """Run a Lightning command (fit/validate/test/predict); returns the finished LightningCLI."""
    from pytorch_lightning.cli import LightningCLI

    from genretag.data.datamodules import ClipDataModule
    from genretag.task import TaggingTask

    class GenretagCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # The data decide what the model sees: labels, head type, rate and window length.
            for source, target in [
                ("data.label_names", "model.labels"),
                ("data.task", "model.task"),
                ("data.sample_rate", "model.sample_rate"),
                ("data.window_seconds", "model.window_seconds"),
            ]:
                parser.link_arguments(source, target, apply_on="instantiate")

    import torch

    return GenretagCLI(
        TaggingTask,
        ClipDataModule,
        subclass_mode_data=True,
        # bf16 mixed precision where a GPU is present (the front-end stays fp32 inside the model)
        trainer_defaults={"precision": "bf16-mixed" if torch.cuda.is_available() else "32-true"},
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
    )


def _one_line(error: argparse.ArgumentError) -> str:
    """jsonargparse's nested report -> ``data.subset: Expected a ... Got value: tiny``."""
    text = str(error)
    keys = re.findall(r'Parser key "([^"]+)"', text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = max((i for i, line in enumerate(lines) if line.startswith("Parser key")), default=None)
    if last is None or last + 1 >= len(lines):
        return lines[0] if lines else text
    return f"{'.'.join(dict.fromkeys(keys))}: {lines[last + 1]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 some inputs failed, 2 usage/config)."""
    from genretag.errors import ConfigError

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    args = [a for a in args if a != "--verbose"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command = args[0]
    try:
        if command in OWN_COMMANDS:
            module = importlib.import_module(OWN_COMMANDS[command][0])
            return int(module.main(args[1:]) or 0)
        if command not in LIGHTNING_COMMANDS:
            print(f"genretag: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
            return 2
        lightning_cli(args)
        return 0
    except (ConfigError, argparse.ArgumentError) as error:
        if verbose:
            raise
        message = _one_line(error) if isinstance(error, argparse.ArgumentError) else str(error)
        print(f"genretag: error: {message} (--verbose for details)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genretag: interrupted", file=sys.stderr)
        return 130
