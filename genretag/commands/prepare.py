"""``genretag prepare``: decode a dataset once into the decoded-audio cache.

The data module comes from the same YAML configs as ``fit`` (:func:`load_datamodule`), its
files are decoded on worker processes into :class:`genretag.data.cache.DecodedCache`, and the
bad ones are listed. Kept apart from the cache itself, which stays a leaf over
genretag.data.audio (the data modules import the cache; this module imports the data modules).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

from genretag.data.cache import fill
from genretag.data.datamodules import ClipDataModule
from genretag.errors import ConfigError, run_command
from genretag.system import available_cores

log = logging.getLogger(__name__)


def load_datamodule(configs: Sequence[str], overrides: Sequence[str]) -> ClipDataModule:
    """The data module that ``fit --config ...`` would build, from the configs' ``data`` section.

    Only ``data`` matters here, so it is read from the YAML files (later files win, key by key,
    as in LightningCLI) and given with the ``--data.*`` overrides to a jsonargparse parser for
    the data module alone: the same class resolution and type checks as ``fit``, without
    building a model or a trainer.
    """
    from jsonargparse import ArgumentParser

    from genretag import configs as genretag_configs
    from genretag.data.datamodules import ClipDataModule

    data: dict = {}
    for config in configs:
        section = genretag_configs.read(config).get("data")
        if isinstance(section, dict):
            data = genretag_configs.merged(data, section)
    if not data and not any(o.startswith("--data") for o in overrides):
        raise ConfigError(
            "prepare: no data section; pass --config with a training config (configs/*.yaml)"
        )
    parser = ArgumentParser(exit_on_error=False, parser_mode="omegaconf")
    parser.add_subclass_arguments(ClipDataModule, "data", required=True)
    args = ([f"--data={json.dumps(data)}"] if data else []) + list(overrides)
    try:
        cfg = parser.parse_args(args)
    except Exception as error:  # jsonargparse's ArgumentError: a wrong key or value
        raise ConfigError(f"prepare: {error}") from None
    return parser.instantiate_classes(cfg).data


def dataset_paths(datamodule: ClipDataModule) -> list[str]:
    """Every distinct audio file of the training, validation and test splits, in order."""
    paths: dict[str, None] = {}
    for stage in ("train", "val", "test"):
        try:
            clips = datamodule.clip_list(stage)  # type: ignore[arg-type]
        except ConfigError as error:
            log.warning("prepare: skipping the %s split: %s", stage, error)
            continue
        paths.update(dict.fromkeys(clips.paths))
    return list(paths)


def main(argv: list[str] | None = None) -> int:
    """``genretag prepare ...``; errors are one line (genretag.errors.run_command)."""
    return run_command("prepare", _main, argv)


def _main(argv: list[str]) -> int:
    """``prepare``: decode a config's dataset into its cache; 1 if some tracks are bad."""
    parser = argparse.ArgumentParser(
        prog="genretag prepare",
        allow_abbrev=False,
        description="Decode every track of a config's dataset once into --data.cache_dir, "
        "using every core, so that training reads crops from memory-mapped int16.",
        epilog="Any --data.* option of `fit` is accepted, e.g. --data.cache_dir /fast/cache.",
    )
    parser.add_argument("--config", action="append", default=[], help="training YAML config")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("--") and not a.startswith("--data")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (only --data.* options)")
    datamodule = load_datamodule(args.config, rest)
    cache = datamodule.cache
    if cache is None:
        raise ConfigError(
            "data.cache_dir: not set; pass --data.cache_dir DIR (or set cache_dir in the config's "
            "data section) to say where decoded audio goes"
        )
    paths = dataset_paths(datamodule)
    workers = args.workers or available_cores()  # prepare has the machine to itself
    log.info("decoding %d tracks at %d Hz into %s on %d processes", len(paths),
             cache.sample_rate, cache.folder, workers)  # fmt: skip
    report = fill(cache, paths, workers, progress=not args.no_progress)
    for path, reason in list(report.bad.items())[:20]:
        log.warning("bad track %s: %s", path, reason)
    if len(report.bad) > 20:
        log.warning("... and %d more bad tracks", len(report.bad) - 20)
    print(f"prepared {cache.folder}: {report.summary()}")
    return 1 if report.bad else 0
