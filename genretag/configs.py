"""Training configs as a base plus overlays: a config holds only what differs from its base.

A YAML config may name its base with a top-level ``base: fma_small.yaml`` (a path relative to
the config itself). Its settings are laid over the base's, section by section (a mapping merges
key by key, anything else replaces; a new ``class_path`` brings its own ``init_args``), and a
base may have a base of its own. So ``configs/fma_small_fcn.yaml`` holds the FCN trunk and its
learning rate, and everything else comes from ``configs/fma_small.yaml``.

Every reader of configs goes through :func:`read` (read as data with ``yaml.safe_load``):
LightningCLI's ``--config`` (:func:`expand`), ``prepare``, ``baseline`` and ``embed``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from genretag.errors import ConfigError

BASE = "base"


def read(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of config ``path`` laid over those of its bases; ConfigError naming the file
    when it cannot be read, is not a mapping, or its bases loop."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"--config {path}: its base chain loops back to itself")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"--config: cannot read {path} ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(
            f"--config: {path} is not valid YAML ({error.__class__.__name__})"
        ) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config: {path} must be a mapping of settings")
    base = loaded.pop(BASE, None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"--config {path}: base: give one config file, got {base!r}")
    return merged(read(path.parent / base, (*_seen, path.resolve())), loaded)


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base`` (see the module docstring); neither is changed."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = merged(out[key], value)
        out[key] = value
    if "class_path" in update and update["class_path"] != base.get("class_path"):
        out["init_args"] = update.get("init_args", {})  # another class: its own arguments
    return out


def expand(args: list[str]) -> list[str]:
    """LightningCLI arguments with each ``--config FILE`` that has a base replaced by the merged
    settings (jsonargparse takes a config as a file or as YAML text); others are unchanged."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config" and i + 1 < len(args):
            name, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            name, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        path = Path(name)
        if path.is_file() and BASE in (_top_keys(path)):
            out += ["--config", yaml.safe_dump(read(path), sort_keys=False)]
        else:
            out += ["--config", name]
    return out


def _top_keys(path: Path) -> set[str]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return set()  # LightningCLI reports it
    return set(loaded) if isinstance(loaded, dict) else set()
