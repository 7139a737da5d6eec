"""The network: waveform -> log-mel front-end -> trunk -> head -> logits, as a plain nn.Module.

Everything that scores audio uses it: ``genretag tag``, the beets plugin, ``embed``, ``export``,
the cluster runner, and (wrapped by genretag.task.TaggingTask) training and evaluation. Loading
one imports no training framework, as whisper's ``load_model`` does: the settings are stored
beside the weights, and :meth:`Network.load` rebuilds the module from them.

A checkpoint is ``{"hyper_parameters": {...}, "state_dict": {...}}``, read as data
(genretag.checkpoint). The state-dict keys are the network's own (``trunk.*``, ``head.*``,
``label_thresholds``) in every file genretag writes, whatever wrote it: ``fit``, ``export`` or
an importer of published weights (genretag.pretrained). The hyper-parameters hold what scoring
needs: labels, head type, sample rate, window, padding, front-end and trunk settings, FMA's genre
tree, and each label's F1-best validation threshold (a buffer, for ``tag --threshold auto``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from genretag import constants
from genretag.checkpoint import load_checkpoint, load_weights
from genretag.errors import ConfigError
from genretag.features import FRONTEND_DEFAULTS, FRONTEND_KEYS, Frontend, build_frontend
from genretag.heads import Task, make_head
from genretag.models import build_trunk, canonical_trunk, shared_layers, trunk_path
from genretag.pretrained import resolve_checkpoint
from genretag.windows import PadMode

# Hyper-parameters that must match for trunk weights to be reusable (transfer, checks).
TRUNK_KEYS = ("trunk", "channels", "gru_hidden", "gru_layers")
WHOLE_TRUNK_HINT = (
    "its trunk is not this model's; use --model.trunk/channels/gru_hidden/gru_layers as in its "
    "training"
)


class Network(nn.Module):
    """Waveform (B, T) float32 mono at ``sample_rate`` -> logits (B, C); see the module docstring.

    The trunk and head are chosen once, here, from the hyper-parameters; the head holds the
    task-specific parts (loss, probabilities, metrics).
    """

    def __init__(
        self,
        labels: list[str],
        task: Task = "multilabel",
        sample_rate: int = constants.SAMPLE_RATE,
        window_seconds: float = constants.WINDOW_SECONDS,
        pad_mode: PadMode = "zero",
        n_fft: int = constants.N_FFT,
        hop_length: int = constants.HOP_LENGTH,
        n_mels: int = constants.N_MELS,
        f_min: float = constants.F_MIN,
        f_max: float | None = constants.F_MAX,
        frontend: Frontend = "logmel",
        channels: tuple[int, ...] = (64, 128, 128, 128),
        gru_hidden: int = 128,
        gru_layers: int = 2,
        trunk: dict[str, Any] | None = None,
        dropout: float = 0.1,
        threshold: float = 0.5,
        label_smoothing: float = 0.0,
        genre_tree: dict[str, list[str]] | None = None,
        genre_map: dict[str, Any] | None = None,
    ) -> None:
        """
        Args:
            labels: label names, one output each (linked from the data module).
            task: multilabel (sigmoid + BCE) or multiclass (softmax + cross-entropy).
            sample_rate: Hz of the waveform the model takes (linked from the data module).
            window_seconds: length of one input window (training crop, evaluation window).
            pad_mode: how a clip shorter than a window is filled (linked from the data module),
                kept so that ``tag`` pads as evaluation did.
            n_fft, hop_length, n_mels, f_min, f_max: log-mel front-end settings.
            frontend: logmel (genretag's) or musicnn (musicnn's log10(10000 mel + 1) on
                librosa's power mel; genretag.features.MusicnnMel), see build_frontend.
            channels, gru_hidden, gru_layers, dropout: CRNN trunk size (dropout: the head's too).
            trunk: another trunk of genretag.models instead of the CRNN, as
                ``{"class_path": "genretag.models.fcn.FCN", "init_args": {...}}`` (kept in the
                checkpoint as plain data; only genretag.models' trunks can be named).
            threshold: probability above which a label counts as predicted (F1).
            label_smoothing: for multiclass cross-entropy.
            genre_tree: each label's ancestors in FMA's taxonomy, root first (linked from the
                data module; ``tag --with-parents`` writes them), or None.
            genre_map: the genre map ``tag`` applies when given no --genre-map, as plain data
                ({rename, drop, keep}, genretag.vocabulary); set by importers of published
                models whose tags are not all genres (genretag.pretrained); None: no map.
        """
        super().__init__()
        self.hparams: dict[str, Any] = {
            name: value
            for name, value in locals().items()
            if name in inspect.signature(Network.__init__).parameters and name != "self"
        }
        self.hparams["channels"] = list(channels)  # plain data: hparams.yaml stays safe_load-able
        self.labels = [str(label) for label in labels]
        self.task: Task = task
        self.sample_rate = int(sample_rate)
        self.window_seconds = float(window_seconds)
        self.window = round(self.window_seconds * self.sample_rate)
        self.pad_mode: PadMode = pad_mode
        self.genre_tree: dict[str, list[str]] = dict(genre_tree or {})
        self.card = ""  # a few lines about where the weights come from (Network.load)
        self.frontend = build_frontend(
            frontend, sample_rate, n_fft, hop_length, n_mels, f_min, f_max
        )
        self.trunk = build_trunk(
            trunk,
            n_mels,
            channels=tuple(channels),
            gru_hidden=gru_hidden,
            gru_layers=gru_layers,
            dropout=dropout,
        )
        self.head = make_head(
            task, self.trunk.out_features, len(labels), dropout, threshold, label_smoothing
        )
        # Per label, the threshold that maximised F1 on validation (``tag --threshold auto``).
        self.register_buffer("label_thresholds", torch.full((len(labels),), float(threshold)))

    def forward(self, audio: Tensor) -> Tensor:
        """Waveform (B, T) float at ``sample_rate`` -> logits (B, C)."""
        return self.head(self.features(audio))

    def features(self, audio: Tensor) -> Tensor:
        """Waveform (B, T) -> the trunk's pooled features (B, D): the track embedding."""
        return self.trunk(self.frontend(audio))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Logits (B, C) -> probabilities (B, C) float32: the head's sigmoid or softmax."""
        return self.head.probabilities(logits)

    def frontend_settings(self) -> dict[str, Any]:
        """The settings that define the front-end (equal for ensemble members and transfer)."""
        return {key: self.hparams.get(key, FRONTEND_DEFAULTS.get(key)) for key in FRONTEND_KEYS}

    def transfer_trunk(self, path: str) -> str:
        """Initialise the trunk from the checkpoint ``path`` (``model.init_from``); the head is
        untouched. Returns what was copied, for the log.

        The front-end settings must equal the file's. A trunk of the file's class and settings
        is copied whole; a trunk whose ``transfers_from`` names the file's trunk class
        (genretag.models) takes the layers named there, every tensor of them present in the
        file with the same shape. Anything else: one-line ConfigError naming the setting.
        """
        path = resolve_checkpoint(path)
        theirs = load_checkpoint(path)["hyper_parameters"]
        source = trunk_path(theirs.get("trunk"))
        layers = shared_layers(self.trunk, source)
        if layers:
            self._check_settings(FRONTEND_KEYS, theirs, path)
        else:  # the whole trunk: its settings too (channels and gru_* size the CRNN only)
            trunk_keys = TRUNK_KEYS if self.hparams["trunk"] is None else TRUNK_KEYS[:1]
            self._check_settings(FRONTEND_KEYS + trunk_keys, theirs, path)
        state = Network.load(path).trunk.state_dict()
        if not layers:
            load_weights(self.trunk, state, path, hint=WHOLE_TRUNK_HINT)
            return f"the trunk ({len(state)} tensors)"
        shared = nn.ModuleDict({name: getattr(self.trunk, name) for name in layers})
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in layers}
        init_args = (theirs.get("trunk") or {}).get("init_args") or {}
        hint = (
            f"set --model.trunk.init_args as in its {source.rsplit('.', 1)[1]} trunk "
            f"({init_args or 'the defaults'}) to reuse its {', '.join(layers)}"
        )
        load_weights(shared, state, path, hint=hint)
        return f"the trunk's {', '.join(layers)} ({len(state)} tensors of its {source})"

    def _check_settings(self, keys: tuple[str, ...], theirs: Mapping[str, Any], path: str) -> None:
        """ConfigError naming the first of ``keys`` whose value differs from the file's."""
        for key in keys:
            mine, other = self.hparams[key], theirs.get(key, FRONTEND_DEFAULTS.get(key))
            if key == "channels":
                mine, other = tuple(mine), tuple(other or ())
            if key == "trunk":
                mine, other = canonical_trunk(mine), canonical_trunk(other)
            if mine != other:
                where = "--data.sample_rate" if key == "sample_rate" else f"--model.{key}"
                raise ConfigError(
                    f"model.init_from: {path} has {key}={other!r} but this model has "
                    f"{key}={mine!r}; set {where} to {other!r} to reuse its trunk"
                )

    @classmethod
    def build(cls, hparams: Mapping[str, Any]) -> Network:
        """A new network from a checkpoint's (or a config's) hyper-parameters; other keys, such
        as training settings, are ignored. Defaults fill what older checkpoints did not store."""
        accepted = inspect.signature(cls.__init__).parameters
        kwargs = {k: v for k, v in hparams.items() if k in accepted and k != "self"}
        if "pad_mode" not in kwargs:  # written before the model kept it: the data's defaults
            kwargs["pad_mode"] = "loop" if kwargs.get("task") == "multiclass" else "zero"
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Network:
        """The trained network of a checkpoint file alone, in eval mode, loaded as data.

        Reads training checkpoints of this release and the previous one, exported files and
        imported published weights (``path`` may name one, e.g. ``musicnn-msd``: converted once,
        genretag.pretrained.resolve_checkpoint); one-line ConfigError naming ``path`` when it
        does not fit.
        """
        path = resolve_checkpoint(str(path))
        checkpoint = load_checkpoint(path)
        network = cls.build(checkpoint["hyper_parameters"])
        state = network_state(checkpoint["state_dict"])
        state.setdefault("label_thresholds", network.label_thresholds)  # before they were kept
        load_weights(network, state, path)
        network.card = describe_card(checkpoint)
        return network.to(map_location).eval()


def network_state(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's state dict in the network's keys (``trunk.*``, ``head.*`` ...).

    Keys are stored that way; a state dict taken from the LightningModule itself (``network.*``)
    is accepted too.
    """
    prefix = "network."
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def describe_card(checkpoint: Mapping[str, Any]) -> str:
    """A few lines about a checkpoint's model, for ``genretag tag --verbose`` and ``export``.

    From its ``model_card`` when exported or imported, else from its hyper-parameters and
    callback states.
    """
    card = checkpoint.get("model_card")
    hparams = checkpoint.get("hyper_parameters", {})
    if not isinstance(card, dict):
        card = {
            "task": hparams.get("task"),
            "labels": len(hparams.get("labels") or ()),
            "metrics": best_scores(checkpoint),
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


def best_scores(checkpoint: Mapping[str, Any]) -> dict[str, float]:
    """{monitor: best_model_score} of each ModelCheckpoint state that monitored something."""
    scores = {}
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if not str(name).startswith("ModelCheckpoint") or not isinstance(state, dict):
            continue
        monitor, score = state.get("monitor"), state.get("best_model_score")
        if monitor and score is not None:
            scores[str(monitor)] = float(score)
    return scores
