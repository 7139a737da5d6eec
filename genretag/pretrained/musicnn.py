"""musicnn's published weights as ordinary genretag checkpoints, converted with numpy alone.

The ``musicnn`` 0.1.0 package (PyPI, ISC license as it declares; install it with
``pip install --no-deps musicnn==0.1.0``: its TensorFlow and numpy pins cannot be installed today,
and only its files are read) ships TensorFlow 1 checkpoints. :func:`import_musicnn` reads one
with genretag.pretrained.tfbundle and writes a genretag checkpoint: the trunk
(genretag.models.musicnn_original.MusicnnOriginal for MSD_musicnn and MTT_musicnn,
genretag.models.musicnn_vgg.MusicnnVGG for MSD_vgg and MTT_vgg), the genre head (dropout + the
tag layer), the musicnn front-end (genretag.features.MusicnnMel), 187-frame windows, the tag
names, a default genre map and a model card. :func:`resolve_checkpoint` turns ``musicnn:MSD``
(or ``musicnn-msd``; ``musicnn:MSD_vgg`` or ``musicnn-msd-vgg``) into such a file in the user's
cache, converting it on first use.

Weights: TF conv kernels are HWIO, torch's OIHW (musicnn's mid-end (7, C, 1, O) becomes a
Conv1d's (O, C, 7)); dense kernels are (in, out), torch's (out, in); a batch norm's gamma, beta,
moving_mean, moving_variance are weight, bias, running_mean, running_var (epsilon 0.001 in the
module). Each architecture has a table (:data:`LAYOUTS`) from our module to the TF layer; TF named
layers in creation order (conv2d, conv2d_1, ...; batch_normalization_N) unless the code named
them (the vgg's 1CNN ... 5CNN).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from genretag.errors import ConfigError
from genretag.io import atomic_write, exclusive
from genretag.pretrained.tfbundle import read_bundle

log = logging.getLogger(__name__)

FRAMES = 187  # musicnn's patch: librosa.time_to_frames(3 s) + 1
HOP = 256
WINDOW_SECONDS = FRAMES * HOP / 16_000  # 2.992 s = 47,872 samples -> 187 frames (MusicnnMel)
INSTALL = "pip install --no-deps musicnn==0.1.0"
LICENSE_NOTE = (
    "The musicnn package declares the ISC license (its LICENSE.md, Music Technology Group, "
    "Universitat Pompeu Fabra 2019). Essentia's model page lists MTG's own models under CC "
    "BY-NC-SA 4.0 (non-commercial): check which applies before commercial use."
)
MSD_LABELS = ['rock', 'pop', 'alternative', 'indie', 'electronic', 'female vocalists', 'dance',
    '00s', 'alternative rock', 'jazz', 'beautiful', 'metal', 'chillout', 'male vocalists',
    'classic rock', 'soul', 'indie rock', 'Mellow', 'electronica', '80s', 'folk', '90s', 'chill',
    'instrumental', 'punk', 'oldies', 'blues', 'hard rock', 'ambient', 'acoustic',
    'experimental', 'female vocalist', 'guitar', 'Hip-Hop', '70s', 'party', 'country',
    'easy listening', 'sexy', 'catchy', 'funk', 'electro', 'heavy metal', 'Progressive rock',
    '60s', 'rnb', 'indie pop', 'sad', 'House', 'happy']  # fmt: skip
MTT_LABELS = ['guitar', 'classical', 'slow', 'techno', 'strings', 'drums', 'electronic', 'rock',
    'fast', 'piano', 'ambient', 'beat', 'violin', 'vocal', 'synth', 'female', 'indian', 'opera',
    'male', 'singing', 'vocals', 'no vocals', 'harpsichord', 'loud', 'quiet', 'flute', 'woman',
    'male vocal', 'no vocal', 'pop', 'soft', 'sitar', 'solo', 'man', 'classic', 'choir', 'voice',
    'new age', 'dance', 'male voice', 'female vocal', 'beats', 'harp', 'cello', 'no voice',
    'weird', 'country', 'metal', 'female voice', 'choral']  # fmt: skip
# name -> (musicnn's folder, labels, data set, default genre map); the folder's suffix names the
# architecture (its LAYOUTS entry)
MSD = "Million Song Dataset, Last.fm's 50 most common tags"
MTT = "MagnaTagATune, its 50 most common tags"
MODELS: dict[str, tuple[str, list[str], str, str]] = {
    "msd": ("MSD_musicnn", MSD_LABELS, MSD, "musicnn_msd.yaml"),
    "mtt": ("MTT_musicnn", MTT_LABELS, MTT, "musicnn_mtt.yaml"),
    "msd-vgg": ("MSD_vgg", MSD_LABELS, MSD, "musicnn_msd.yaml"),
    "mtt-vgg": ("MTT_vgg", MTT_LABELS, MTT, "musicnn_mtt.yaml"),
}
MAPS = Path(__file__).parent / "maps"


@dataclass(frozen=True)
class Layout:
    """One architecture: its trunk, and our state-dict module -> its TF layer, by kind."""

    trunk: str
    conv2d: dict[str, str]
    norms: dict[str, str]
    denses: dict[str, str]
    conv1d: dict[str, str] = field(default_factory=dict)  # TF (k, C, 1, O) over a whole axis


_MUSICNN_NORMS = {"trunk.input_norm": "batch_normalization"}
_MUSICNN_NORMS |= {f"trunk.front.{i}.norm": f"batch_normalization_{i + 1}" for i in range(5)}
_MUSICNN_NORMS |= {f"trunk.mid.{i}.norm": f"batch_normalization_{i + 6}" for i in range(3)}
_MUSICNN_NORMS |= {"trunk.pool_norm": "batch_normalization_9"}
_MUSICNN_NORMS |= {"trunk.dense_norm": "batch_normalization_10"}
LAYOUTS = {
    "musicnn": Layout(
        trunk="genretag.models.musicnn_original.MusicnnOriginal",
        conv2d={f"trunk.front.{i}.conv": f"conv2d{'_' + str(i) if i else ''}" for i in range(5)},
        conv1d={f"trunk.mid.{i}.conv": f"conv2d_{i + 5}" for i in range(3)},
        norms=_MUSICNN_NORMS,
        denses={"trunk.dense": "dense", "head.1": "dense_1"},
    ),
    "vgg": Layout(
        trunk="genretag.models.musicnn_vgg.MusicnnVGG",
        conv2d={f"trunk.blocks.{i}.conv": f"{i + 1}CNN" for i in range(5)},
        norms={"trunk.input_norm": "batch_normalization"}
        | {f"trunk.blocks.{i}.norm": f"batch_normalization_{i + 1}" for i in range(5)},
        denses={"head.1": "dense"},
    ),
}


def layout(name: str) -> Layout:
    """The architecture of musicnn model ``name``: its folder's suffix (MSD_vgg -> vgg)."""
    return LAYOUTS[MODELS[model_name(name)][0].split("_", 1)[1]]


def model_name(name: str) -> str:
    """``msd``/``mtt``/``msd-vgg``/``mtt-vgg`` from ``musicnn-msd``, ``MSD``, ``musicnn:MTT``,
    ``MSD_musicnn``, ``musicnn-msd-vgg``, ``musicnn:MSD_vgg`` ..."""
    key = name.lower().replace("_", "-").removeprefix("musicnn").strip(":-")
    key = key.removesuffix("-musicnn")
    if key not in MODELS:
        raise ConfigError(
            f"{name!r}: not a musicnn model; use one of "
            + ", ".join(f"musicnn-{k}" for k in MODELS)
        )
    return key


def package_folder() -> Path:
    """The installed musicnn package's folder (found, not imported: none of its code runs)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"musicnn is not installed; {INSTALL} (TensorFlow is not needed)")
    return Path(next(iter(spec.submodule_search_locations)))


def package_version() -> str:
    try:
        return importlib.metadata.version("musicnn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def state_dict(tensors: dict[str, np.ndarray], layers: Layout) -> dict[str, torch.Tensor]:
    """TF variables (name -> array) -> genretag's ``trunk.*`` and ``head.*`` tensors."""
    out: dict[str, torch.Tensor] = {}
    convs = [(ours, tf, False) for ours, tf in layers.conv2d.items()]
    for ours, tf, flat in convs + [(ours, tf, True) for ours, tf in layers.conv1d.items()]:
        kernel = tensors[f"{tf}/kernel"]  # HWIO
        # (7, C, 1, O) -> Conv1d (O, C, 7); HWIO -> OIHW
        weight = kernel[:, :, 0, :].transpose(2, 1, 0) if flat else kernel.transpose(3, 2, 0, 1)
        out[f"{ours}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        out[f"{ours}.bias"] = torch.from_numpy(tensors[f"{tf}/bias"])
    for ours, tf in layers.norms.items():
        for name, var in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                          ("running_var", "moving_variance")):  # fmt: skip
            out[f"{ours}.{name}"] = torch.from_numpy(tensors[f"{tf}/{var}"])
        out[f"{ours}.num_batches_tracked"] = torch.tensor(0)
    for ours, tf in layers.denses.items():
        out[f"{ours}.weight"] = torch.from_numpy(np.ascontiguousarray(tensors[f"{tf}/kernel"].T))
        out[f"{ours}.bias"] = torch.from_numpy(tensors[f"{tf}/bias"])
    return out


def tf_names(layers: Layout = LAYOUTS["musicnn"]) -> list[str]:
    """The TF variables inference needs (64 for musicnn, 36 for the vgg)."""
    weighted = [*layers.conv2d.values(), *layers.conv1d.values(), *layers.denses.values()]
    names = [f"{tf}/{v}" for tf in weighted for v in ("kernel", "bias")]
    names += [f"{tf}/{v}" for tf in layers.norms.values()
              for v in ("gamma", "beta", "moving_mean", "moving_variance")]  # fmt: skip
    return names


def published_scores(folder: Path) -> dict[str, float]:
    """The test ROC-AUC and PR-AUC in the model folder's ``experiment.result`` (in that order)."""
    try:
        text = (folder / "experiment.result").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    numbers = re.findall(r"AUC:\s*([0-9.]+)", text)
    if len(numbers) < 2:
        return {}
    return {"test/roc_auc": round(float(numbers[0]), 4), "test/pr_auc": round(float(numbers[1]), 4)}


def genre_map(name: str) -> dict[str, Any]:
    """The default genre map of model ``name`` as plain data ({keep, rename}), from maps/."""
    return yaml.safe_load((MAPS / MODELS[model_name(name)][3]).read_text(encoding="utf-8"))


def build_checkpoint(name: str) -> dict[str, Any]:
    """The genretag checkpoint of musicnn model ``name`` (see :data:`MODELS`), from the
    installed package."""
    key = model_name(name)
    folder_name, labels, data, _ = MODELS[key]
    folder = package_folder() / folder_name
    layers = layout(key)
    tensors = read_bundle(f"{folder}/", tf_names(layers))
    version = package_version()
    hparams = {
        "labels": list(labels), "task": "multilabel", "sample_rate": 16_000,
        "window_seconds": WINDOW_SECONDS, "pad_mode": "zero", "n_fft": 512, "hop_length": HOP,
        "n_mels": 96, "f_min": 0.0, "f_max": 8000.0, "frontend": "musicnn",
        "trunk": {"class_path": layers.trunk, "init_args": {}}, "dropout": 0.5, "threshold": 0.5,
        "spec_augment": False, "init_from": None, "genre_tree": None, "genre_map": genre_map(key),
    }  # fmt: skip
    state = state_dict(tensors, layers)
    state["label_thresholds"] = torch.full((len(labels),), 0.5)
    card = {
        "task": "multilabel",
        "labels": len(labels),
        "data": {"dataset": data},
        "metrics": published_scores(folder),
        "source": f"musicnn {version} (PyPI) {folder_name}, converted by genretag",
        "license": LICENSE_NOTE,
        "reference": "Pons & Serra, musicnn: pre-trained convolutional neural networks for music "
        "audio tagging, ISMIR 2019 LBD; github.com/jordipons/musicnn",
        "genretag_version": _genretag_version(),
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return {"hyper_parameters": hparams, "state_dict": state, "model_card": card}


def _genretag_version() -> str:
    from genretag import __version__

    return __version__


def import_musicnn(name: str, out: str | os.PathLike) -> dict[str, Any]:
    """Write the genretag checkpoint of musicnn model ``name`` to ``out`` (atomically) and check
    that it reads back as data; returns what was written."""
    from genretag.checkpoint import load_checkpoint

    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name such as {out / 'msd.ckpt'}")
    content = build_checkpoint(name)
    atomic_write(out, lambda f: torch.save(content, f), what="the checkpoint ")
    if load_checkpoint(out)["state_dict"].keys() != content["state_dict"].keys():
        raise ConfigError(f"--out {out}: the written file does not read back whole; run it again")
    log.info("wrote %s from musicnn %s %s", out, package_version(), MODELS[model_name(name)][0])
    return content


def cache_dir() -> Path:
    """$GENRETAG_CACHE, else $XDG_CACHE_HOME/genretag, else ~/.cache/genretag."""
    if os.environ.get("GENRETAG_CACHE"):
        return Path(os.environ["GENRETAG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genretag"


def is_published(spec: str) -> bool:
    """Whether ``spec`` names a published model (``musicnn-msd``, ``musicnn:MTT_vgg`` ...)."""
    return bool(re.fullmatch(r"(?i)musicnn[:\-_][\w-]+", spec)) and not os.path.exists(spec)


def resolve_checkpoint(spec: str) -> str:
    """The file behind a ``--ckpt`` value: ``musicnn:MSD``/``musicnn-msd`` (MTT, the vgg) become the
    converted checkpoint in :func:`cache_dir` (converted on first use, again when the installed
    musicnn's version changes); any other value is returned unchanged."""
    text = str(spec)
    if not is_published(text):
        return text
    key = model_name(text)
    target = cache_dir() / f"musicnn-{key}-{package_version()}.ckpt"
    if not target.is_file():  # several processes (Ray actors, DDP ranks) may get here: one converts
        with exclusive(target.with_name(f"{target.name}.lock"), str(target), wait=True):
            if not target.is_file():
                log.info("converting musicnn's %s weights into %s (once)", MODELS[key][0], target)
                import_musicnn(key, target)
    return str(target)
