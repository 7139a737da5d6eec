"""Reading checkpoints as data: the one place genretag opens a ``.ckpt`` it did not just write.

A ``.ckpt`` is a pickle, and a pickle can name any function to call while it is read (a crafted
file runs ``os.system`` before a single check). :func:`load_checkpoint` therefore reads with
``torch.load(weights_only=True)``: tensors, dicts, lists, tuples, strings, numbers, booleans and
None, plus the few classes in :data:`ALLOWED_GLOBALS`, allowed for that one call only (nothing
else in the process is widened). Anything else is refused before it is built, with one line that
names the file and what it asked for.

Measured (torch 2.13, pytorch_lightning 2.6): best/last checkpoints of ``genretag fit`` for FMA,
for Freesound and after transfer (``--model.init_from``), Lightning's loop, optimizer, scheduler
and callback states and :class:`genretag.resume.RandomState` included, need no global
beyond torch's defaults. The writer (:class:`genretag.resume.AtomicCheckpointIO`, and
``genretag export``) stores paths in hyper-parameters as strings; the path classes below are
allowed so that a model built from Python with ``init_from=Path(...)`` and saved by a plain
Trainer still loads (constructing a path object reads nothing and runs nothing).

:func:`load_weights` loads a state dict strictly and says in one line how it does not fit.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from genretag.errors import ConfigError

# Globals a genretag checkpoint may carry beyond torch's weights_only defaults (see above).
ALLOWED_GLOBALS: tuple[type, ...] = (pathlib.PosixPath, pathlib.WindowsPath)
# Hyper-parameters without which a checkpoint cannot be used to tag (genretag.task.TaggingTask).
REQUIRED_HPARAMS = frozenset({"labels", "sample_rate", "task"})
REFUSED_HINT = (
    "which is not a plain checkpoint type (genretag loads checkpoints as data; "
    "export shared models with genretag export)"
)
# torch's wording: "Unsupported global: GLOBAL posix.system was not an allowed global ..." or
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _refused_global(error: BaseException) -> str | None:
    """The name of the global a weights-only load refused, or None for another failure."""
    match = _GLOBAL.search(str(error))
    return match.group(1) if match else None


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The unpickled content of ``path`` (any plain object), loaded as data onto the CPU.

    Raises ConfigError (one line, naming the file) when it is missing, is not a torch file, or
    would need a type outside torch's defaults and :data:`ALLOWED_GLOBALS`; nothing in it runs.
    """
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such checkpoint file") from None
    except pickle.UnpicklingError as error:
        name = _refused_global(error)
        if name is None:
            raise ConfigError(f"{path}: not a readable checkpoint (UnpicklingError)") from None
        raise ConfigError(f"{path}: refused to load: it needs {name}, {REFUSED_HINT}") from None
    except Exception as error:
        raise ConfigError(
            f"{path}: not a readable checkpoint ({error.__class__.__name__})"
        ) from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a genretag checkpoint as data (see the module docstring) and check that it is one.

    Returns the checkpoint dict: ``state_dict`` (name -> tensor) and ``hyper_parameters`` with at
    least ``labels``, ``sample_rate`` and ``task``; a training checkpoint also has Lightning's
    loop, optimizer and callback states, an exported one a ``model_card``. ConfigError otherwise.
    """
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    if (
        not isinstance(hparams, Mapping)
        or not isinstance(checkpoint.get("state_dict"), Mapping)
        or not REQUIRED_HPARAMS <= set(hparams)
    ):
        raise ConfigError(
            f"{path}: not a genretag checkpoint (no labels/sample_rate in its hyper-parameters)"
        )
    return dict(checkpoint)


def _names(keys: list[str], n: int = 3) -> str:
    more = ", ..." if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _shape(value: Any) -> str:
    """(2, 32) -> ``2x32``; a scalar tensor -> ``scalar``; not a tensor -> its type name."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return type(value).__name__
    return "x".join(map(str, shape)) or "scalar"


def weight_mismatch(model: nn.Module, state_dict: Mapping[str, Any]) -> str | None:
    """How ``state_dict`` fails to fit ``model`` in a few words, or None when it fits exactly.

    E.g. ``2 missing (head.1.weight, head.1.bias), 1 of another shape (trunk.gru.weight_ih_l0:
    96x32 in the file vs 384x128 in the model)``: counts, and the first 3 names of each kind.
    """
    mine = model.state_dict()
    missing = [k for k in mine if k not in state_dict]
    unexpected = [k for k in state_dict if k not in mine]
    reshaped = [k for k in mine if k in state_dict and _shape(state_dict[k]) != _shape(mine[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if reshaped:
        shapes = [
            f"{k}: {_shape(state_dict[k])} in the file vs {_shape(mine[k])} in the model"
            for k in reshaped
        ]
        parts.append(f"{len(reshaped)} of another shape ({_names(shapes)})")
    return ", ".join(parts) or None


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    path: str | os.PathLike,
    hint: str = "its hyper-parameters do not describe its weights; re-export it from the "
    "training checkpoint",
) -> None:
    """Load ``state_dict`` into ``model`` strictly; ConfigError of one line when it does not fit.

    The line names ``path``, counts the missing, unexpected and wrongly shaped tensors with the
    first few names of each, and ends with ``hint`` (what to do).
    """
    mismatch = weight_mismatch(model, state_dict)
    if mismatch:
        raise ConfigError(f"{path}: the weights do not fit the model: {mismatch}; {hint}")
    model.load_state_dict(state_dict, strict=True)


def plain(value: Any) -> Any:
    """``value`` with paths as strings, recursively through dicts, lists and tuples.

    For what genretag writes into checkpoints (hyper-parameters, model cards), so that every
    file it writes loads under torch's defaults alone.
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value
