"""Trunks: log-mel (B, n_mels, frames) -> pooled features (B, out_features).

The trunk contract: ``__init__(self, n_mels: int = 96, <typed keyword arguments with defaults>)``,
``forward(spec)`` for (B, n_mels, frames) with frames from 63 (1 s at hop 256 / 16 kHz) to 1876
(30 s), an ``out_features: int`` attribute, optionally a ``window_seconds`` class attribute (the
window the trunk is meant to be trained and evaluated on). ``model.trunk`` in a config picks one
by ``class_path`` among :data:`TRUNKS` (plain data: nothing is imported from the string).

Transfer (``model.init_from``): a checkpoint's trunk of the same class initialises all of it.
A trunk that shares layers with another class says so in class attributes:
``transfers_from: dict[str, tuple[str, ...]]`` (that class's path -> the names of the submodules
taken from it, same names and shapes there; :func:`shared_layers`) and ``frozen_layers:
tuple[str, ...]`` (the submodules ``model.freeze_trunk_epochs`` freezes instead of the whole
trunk; :func:`frozen_modules`).
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal, Union

from torch import nn

from genretag.errors import ConfigError
from genretag.models.crnn import CRNN
from genretag.models.fcn import FCN
from genretag.models.musicnn import Musicnn
from genretag.models.musicnn_crnn import MusicnnCRNN
from genretag.models.musicnn_original import MusicnnOriginal
from genretag.models.musicnn_vgg import MusicnnVGG
from genretag.models.resnet import ShortChunkResNet

TRUNKS: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__name__}": cls
    for cls in (CRNN, FCN, Musicnn, MusicnnCRNN, MusicnnOriginal, MusicnnVGG, ShortChunkResNet)
}
_SHORT = {f"genretag.models.{cls.__name__}": path for path, cls in TRUNKS.items()}


def trunk_class(class_path: str) -> type[nn.Module]:
    """The registered trunk named by ``class_path`` (``genretag.models.fcn.FCN`` or
    ``genretag.models.FCN``); ConfigError naming ``model.trunk.class_path`` otherwise."""
    path = _SHORT.get(class_path, class_path)
    if path not in TRUNKS:
        raise ConfigError(
            f"model.trunk.class_path: {class_path!r} is not a trunk; use one of {', '.join(TRUNKS)}"
        )
    return TRUNKS[path]


def build_trunk(spec: dict[str, Any] | None, n_mels: int, **crnn_defaults: Any) -> nn.Module:
    """The trunk a config asks for: ``spec=None`` -> CRNN(n_mels, **crnn_defaults), else
    ``{"class_path": ..., "init_args": {...}}`` checked against the class's signature (unknown
    argument or wrong type: one ConfigError naming it; lists become tuples for tuple arguments)."""
    if spec is None:
        return CRNN(n_mels, **crnn_defaults)
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise ConfigError(
            "model.trunk: expected {class_path: genretag.models.<module>.<Class>, init_args: {...}}"
            f", got {spec!r}"
        )
    unknown = set(spec) - {"class_path", "init_args"}
    if unknown:
        raise ConfigError(
            f"model.trunk: unknown key(s) {sorted(unknown)}; use class_path, init_args"
        )
    cls = trunk_class(spec["class_path"])
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ConfigError(f"model.trunk.init_args: expected a mapping, got {init_args!r}")
    return cls(n_mels=n_mels, **checked_init_args(cls, init_args))


def trunk_path(spec: dict[str, Any] | None) -> str:
    """The full class path of the trunk a spec builds (None: the CRNN)."""
    cls = CRNN if spec is None else trunk_class(str(spec.get("class_path")))
    return f"{cls.__module__}.{cls.__name__}"


def shared_layers(trunk: nn.Module, source: str) -> tuple[str, ...] | None:
    """The submodules of ``trunk`` that a trunk of class path ``source`` initialises: () for the
    same class (all of it), the names ``trunk.transfers_from`` gives for ``source``, else None."""
    if source == f"{type(trunk).__module__}.{type(trunk).__name__}":
        return ()
    return getattr(trunk, "transfers_from", {}).get(source)


def frozen_modules(trunk: nn.Module) -> list[nn.Module]:
    """What ``model.freeze_trunk_epochs`` freezes: the trunk's ``frozen_layers``, else all of it."""
    names = getattr(trunk, "frozen_layers", ())
    return [getattr(trunk, name) for name in names] or [trunk]


def canonical_trunk(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A trunk spec as data to compare: the full class path, init_args {} when absent."""
    if not isinstance(spec, dict):
        return spec
    cls = trunk_class(str(spec.get("class_path")))
    return {
        "class_path": f"{cls.__module__}.{cls.__name__}",
        "init_args": spec.get("init_args") or {},
    }


def checked_init_args(cls: type, init_args: dict[str, Any]) -> dict[str, Any]:
    """``init_args`` converted to the types of ``cls.__init__`` (ConfigError naming the argument)."""
    parameters = inspect.signature(cls.__init__).parameters
    hints = typing.get_type_hints(cls.__init__)
    accepted = [name for name in parameters if name not in ("self", "n_mels")]
    checked = {}
    for name, value in init_args.items():
        where = f"model.trunk.init_args.{name}"
        if name == "n_mels":
            raise ConfigError(
                f"{where}: set model.n_mels instead (the trunk takes the front-end's)"
            )
        if name not in accepted:
            raise ConfigError(
                f"{where}: {cls.__name__} has no argument {name!r}; it takes {', '.join(accepted)}"
            )
        try:
            checked[name] = _coerce(value, hints.get(name, Any))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: {value!r} is not a {_type_name(hints.get(name, Any))}"
            ) from None
    return checked


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int, float, bool, str, tuple[...], Literal, X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option)
            except (TypeError, ValueError):
                continue
        raise TypeError
    if hint is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is Literal:
        if value in args:
            return value
        raise ValueError
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "TRUNKS",
    "CRNN",
    "FCN",
    "Musicnn",
    "MusicnnCRNN",
    "MusicnnOriginal",
    "MusicnnVGG",
    "ShortChunkResNet",
    "build_trunk",
    "canonical_trunk",
    "count_parameters",
    "frozen_modules",
    "shared_layers",
    "trunk_class",
    "trunk_path",
]
