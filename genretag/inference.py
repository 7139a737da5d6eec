"""The one inference path: windows -> batched probabilities -> clip scores.

validate/test/predict (genretag.task), ``genretag tag`` (genretag.tagger), the beets plugin,
``embed``, self-training and the cluster runner all score a clip through these functions, over
the windows of genretag.windows, so one model gives one answer everywhere:

* :class:`Predictor` runs one network or an ensemble on a batch of windows (N, T) and gives each
  network's probabilities (sigmoid for genres, softmax for Freesound; the head decides).
* :func:`clip_scores` averages (or maxes) the windows of each clip, and
  :meth:`Predictor.combine` merges the networks of an ensemble (arithmetic, geometric, weighted).
* :func:`score_files` is the batched scorer of whole files (decoded on DataLoader workers):
  clip probabilities, or the pooled features that ``embed`` writes.
* :func:`for_inference` folds BatchNorm, uses channels-last and sets the precision.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import DataLoader

from genretag.data.datasets import AudioFiles, ClipList, EvalClips, collate
from genretag.errors import ConfigError
from genretag.network import Network
from genretag.system import PRECISIONS, Precision, choose_precision

log = logging.getLogger(__name__)

Aggregate = Literal["mean", "max"]
Combine = Literal["arithmetic", "geometric"]


# -- aggregation -------------------------------------------------------------------------------
def clip_scores(
    window_probs: Tensor, clip: Tensor, n_clips: int, aggregate: Aggregate = "mean"
) -> Tensor:
    """Window probabilities (..., N, C) -> clip scores (..., B, C), windows grouped by ``clip``.

    ``clip`` (N,) long holds each window's clip in 0..B-1; ``mean`` averages a clip's windows,
    ``max`` takes each label's highest window score.
    """
    shape = (*window_probs.shape[:-2], n_clips, window_probs.shape[-1])
    index = clip.to(window_probs.device)
    if aggregate == "max":
        out = torch.full(shape, -math.inf, device=window_probs.device, dtype=window_probs.dtype)
        where = index.view(*[1] * (window_probs.dim() - 2), -1, 1).expand_as(window_probs)
        return out.scatter_reduce_(-2, where, window_probs, "amax")
    sums = torch.zeros(shape, device=window_probs.device, dtype=window_probs.dtype)
    sums.index_add_(-2, index, window_probs)
    counts = torch.bincount(index, minlength=n_clips).clamp(min=1).to(sums.dtype)
    return sums / counts.unsqueeze(-1)


# -- models ------------------------------------------------------------------------------------
class Predictor:
    """One network, or several with the same labels, rate, window and padding (an ensemble).

    ``window_probabilities`` gives every network's probabilities for a batch of windows, in the
    first network's label order; ``combine`` merges the networks' clip scores into one.
    """

    def __init__(
        self,
        networks: Sequence[Network],
        combine: Combine = "arithmetic",
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not networks:
            raise ConfigError("no model to predict with: give at least one checkpoint")
        names = list(names or [f"model {i}" for i in range(len(networks))])
        first = networks[0]
        self.labels, self.task, self.genre_tree = first.labels, first.task, first.genre_tree
        self.genre_map: dict | None = first.hparams.get("genre_map")  # tag's default map
        self.sample_rate, self.window_seconds = first.sample_rate, first.window_seconds
        self.window, self.pad_mode = first.window, first.pad_mode
        self.networks: list[Network] = []
        self.orders: list[list[int] | None] = []  # each member's columns in the first's order
        for name, network in zip(names, networks, strict=True):
            self._check_member(name, names[0], network)
            order = [network.labels.index(label) for label in self.labels]
            self.networks.append(network)
            self.orders.append(None if order == list(range(len(order))) else order)
        if weights is not None and len(weights) != len(networks):
            raise ConfigError(
                f"ensemble weights: {len(weights)} weights for {len(networks)} checkpoints"
            )
        w = torch.tensor(weights if weights is not None else [1.0] * len(networks))
        if not bool((w >= 0).all()) or float(w.sum()) <= 0:
            raise ConfigError(f"ensemble weights: {w.tolist()} must be >= 0 with a positive sum")
        self.weights = (w / w.sum()).view(-1, 1, 1)
        self.combine_mode = combine

    @property
    def device(self) -> torch.device:
        """Where the networks are (the first one's parameters)."""
        return next(self.networks[0].parameters()).device

    @property
    def thresholds(self) -> Tensor:
        """Per label, the members' F1-best validation thresholds averaged (C,), on the CPU."""
        per_member = [
            n.label_thresholds.float().cpu()[o if o is not None else slice(None)]
            for n, o in zip(self.networks, self.orders, strict=True)
        ]
        return torch.stack(per_member).mean(0)

    def _check_member(self, name: str, first_name: str, network: Network) -> None:
        mine = (network.task, network.sample_rate, network.window_seconds)
        if mine != (self.task, self.sample_rate, self.window_seconds) or set(network.labels) != set(
            self.labels
        ):
            raise ConfigError(
                f"{name}: cannot be averaged with {first_name} (task, sample rate, window or "
                f"labels differ); an ensemble needs models trained for the same labels"
            )
        if self.networks and network.frontend_settings() != self.networks[0].frontend_settings():
            raise ConfigError(
                f"{name}: its front-end {network.frontend_settings()} differs from "
                f"{first_name}'s {self.networks[0].frontend_settings()}; ensemble members must "
                f"share the front-end"
            )

    @torch.inference_mode()
    def window_probabilities(self, audio: Tensor) -> Tensor:
        """Windows (N, T) float32 at ``sample_rate`` -> probabilities (M, N, C) float32."""
        return self.window_outputs(audio)[0]

    @torch.inference_mode()
    def window_features(self, audio: Tensor) -> Tensor:
        """Windows (N, T) -> the first network's pooled trunk features (N, D) float32."""
        return self.window_outputs(audio)[1]

    @torch.inference_mode()
    def window_outputs(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Windows (N, T) -> (probabilities (M, N, C) as :meth:`window_probabilities`, the first
        network's pooled trunk features (N, D) float32), from the same forward pass."""
        audio = audio.to(self.device, non_blocking=True)
        out, first = [], None
        for network, order in zip(self.networks, self.orders, strict=True):
            features = network.features(audio)
            probs = network.probabilities(network.head(features).float())
            out.append(probs if order is None else probs[:, order])
            first = features.float() if first is None else first
        return torch.stack(out), first

    def combine(self, per_model: Tensor) -> Tensor:
        """Clip scores of every model (M, B, C) -> the ensemble's (B, C)."""
        if len(per_model) == 1:
            return per_model[0]
        w = self.weights.to(per_model.device, per_model.dtype)
        if self.combine_mode == "arithmetic":
            return (w * per_model).sum(0)
        mean = (w * per_model.clamp(min=1e-7).log()).sum(0).exp()
        return mean / mean.sum(-1, keepdim=True) if self.task == "multiclass" else mean

    def clip_probabilities(
        self, audio: Tensor, clip: Tensor | None, n_clips: int, aggregate: Aggregate = "mean"
    ) -> Tensor:
        """Windows (N, T) of ``n_clips`` clips -> the ensemble's clip probabilities (B, C)."""
        probs = self.window_probabilities(audio)
        if clip is None:
            clip = torch.arange(probs.shape[1])
        return self.combine(clip_scores(probs, clip, n_clips, aggregate))


def for_inference(model: Network, device: torch.device, precision: Precision = "fp32") -> Network:
    """``model`` on ``device`` in eval mode, made faster; for inference only.

    Each eval-mode BatchNorm2d is folded into the Conv2d before it, each max-pool runs before the
    activation in front of it (:func:`pool_before_activation`, exact), and on the CPU the convs
    run channels-last (2-3x faster conv + max-pool): outputs unchanged (~1e-6). ``precision``
    then sets the trunk's arithmetic (the log-mel front-end always stays fp32):

    * ``fp32``: as trained.
    * ``bf16``: the trunk's weights and activations in bfloat16 (the small head stays fp32),
      or for trunks that set ``bf16_autocast`` (musicnn's) the trunk under bf16 autocast.
      Fast only where oneDNN has bf16 kernels (AVX-512 BF16 / AMX CPUs, GPUs); on other CPUs
      the convs fall back to a slow path (~15x slower).
    * ``int8``: the GRU and Linear layers dynamically quantized (int8 weights, CPU only); the
      convs stay fp32.
    * ``onnx``: the trunk in fp32, run by ONNX Runtime (CPU only, the ``genretag[onnx]`` extra;
      see :mod:`genretag.onnx_trunk`).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    model = pool_before_activation(fold_batch_norms(model.to(device).eval()))
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    if precision == "bf16":
        return _bf16(model, device)
    if precision == "int8":
        return _int8(model, device)
    if precision == "onnx":
        return _onnx(model, device)
    return model


class _Cast(nn.Module):
    """Runs ``inner`` on its input cast to ``dtype``; the output comes back float32."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.to(self.dtype)).float()


class _Autocast(nn.Module):
    """Runs ``inner`` (fp32 weights) under bf16 autocast: convolutions and matrix products in
    bf16, normalisations, sums and reductions in fp32; the output comes back float32."""

    def __init__(self, inner: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner, self.device_type = inner, device.type

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def _bf16(model: Network, device: torch.device) -> Network:
    """The trunk (B, n_mels, frames) in bfloat16 between the fp32 front-end and head: all of it,
    or under autocast for trunks that set ``bf16_autocast`` (musicnn's)."""
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("--precision bf16: this CPU has no bf16 kernels (AVX-512 BF16); much slower")
    if getattr(model.trunk, "bf16_autocast", False):
        model.trunk = _Autocast(model.trunk, device)
    else:
        model.trunk = _Cast(model.trunk.to(torch.bfloat16), torch.bfloat16)
    return model


def _int8(model: Network, device: torch.device) -> Network:
    """The GRU and Linear layers of trunk and head dynamically quantized to int8 (CPU only)."""
    if device.type != "cpu":
        raise ConfigError(f"--precision int8 runs on the CPU only; use --device cpu, not {device}")
    with warnings.catch_warnings():  # torch.ao's deprecation notice: the API still works
        warnings.simplefilter("ignore")
        for name in ("trunk", "head"):
            quantized = torch.ao.quantization.quantize_dynamic(
                getattr(model, name), {nn.GRU, nn.Linear}, dtype=torch.qint8
            )
            setattr(model, name, quantized)
    return model


def _onnx(model: Network, device: torch.device) -> Network:
    """The trunk exported to ONNX and run by ONNX Runtime; ConfigError when it cannot be."""
    from genretag import onnx_trunk

    if device.type != "cpu":
        raise ConfigError(f"--precision onnx runs on the CPU only; use --device cpu, not {device}")
    if not onnx_trunk.available():
        raise ConfigError(
            "--precision onnx needs ONNX Runtime: pip install 'genretag[onnx]' (or use fp32)"
        )
    noise = torch.randn(2, model.window, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        example = model.frontend(noise)
    try:
        model.trunk = onnx_trunk.OnnxTrunk(model.trunk, example)
    except Exception as error:  # the exporter's and ONNX Runtime's errors have no common base
        why = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ConfigError(
            f"--precision onnx: this model's trunk cannot run in ONNX Runtime ({why}); "
            f"use --precision fp32"
        ) from error
    return model


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm2d into the Conv2d before it (in any nn.Sequential), in place.

    The outputs stay the same (to ~1e-7); a CRNN runs 30-45% faster on CPU without the separate
    normalisation pass. For inference only: the folded model must not be trained or saved.
    """
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                conv, norm = seq[i], seq[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    if norm.track_running_stats and not (conv.training or norm.training):
                        seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return model


# Activations f that are non-decreasing: max(f(a), f(b)) == f(max(a, b)), bit for bit.
MONOTONE_ACTIVATIONS = (nn.ELU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh)


def pool_before_activation(model: nn.Module) -> nn.Module:
    """Swap each monotone activation and the MaxPool2d after it (in any nn.Sequential), in place.

    A non-decreasing activation commutes with max, so the outputs are bit-identical, and the
    activation runs on the pooled map: a quarter of the elements after a (2, 2) pool. The
    default CRNN's forward runs 1.3x faster in fp32 and 1.16x in bf16 on CPU (ELU was 15-26% of
    it). For inference only, like :func:`fold_batch_norms`.
    """
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                act, pool = seq[i], seq[i + 1]
                if isinstance(act, MONOTONE_ACTIVATIONS) and isinstance(pool, nn.MaxPool2d):
                    if getattr(act, "alpha", 0.0) >= 0 and getattr(act, "negative_slope", 0.0) >= 0:
                        seq[i], seq[i + 1] = pool, act
    return model


def load_predictor(
    paths: Sequence[str],
    device: torch.device,
    combine: Combine = "arithmetic",
    weights: Sequence[float] | None = None,
    precision: Precision | Literal["auto"] = "fp32",
    setting: str = "--ckpt",
) -> Predictor:
    """A Predictor over checkpoint files (loaded as data, see :meth:`Network.load`), each network
    at ``precision`` (see :func:`for_inference`; ``auto``: :func:`genretag.system.choose_precision`
    for this machine and that network); ``setting`` names them in errors."""
    networks = []
    for path in paths:
        network = Network.load(path)
        chosen = choose_precision(device, trunk=network.trunk) if precision == "auto" else precision
        log.info("%s %s: model arithmetic %s (--precision %s)", setting, path, chosen, precision)
        try:
            networks.append(for_inference(network, device, chosen))
        except ConfigError as error:
            if precision != "auto" or chosen != "onnx":
                raise
            log.warning("%s %s: %s; --precision auto runs it in torch fp32", setting, path, error)
            networks.append(for_inference(Network.load(path), device, "fp32"))
    return Predictor(networks, combine, weights, names=[f"{setting} {p}" for p in paths])


@torch.inference_mode()
def score_files(
    predictor: Predictor,
    clips: ClipList,
    batch_size: int = 16,
    workers: int = 0,
    features: bool = False,
) -> tuple[np.ndarray, list[bool]]:
    """Each clip's probabilities (N, C), or pooled features (N, D) with ``features``, in
    ``clips``' order, and ok (N,): False where a file could not be decoded (a row of NaN,
    named in a warning). Files are decoded on ``workers`` processes and scored in batches of
    ``batch_size`` clips, every window of a clip in the same batch."""
    source = AudioFiles(predictor.sample_rate)
    dataset = EvalClips(clips, source, predictor.window_seconds, predictor.pad_mode)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    rows: dict[str, np.ndarray] = {}
    for batch in loader:
        for path, reason in batch["bad"]:
            log.warning("skipped %s: %s", path, reason)
        if not batch["key"]:
            continue
        audio, clip, n = batch["audio"], batch["clip"], len(batch["key"])
        if features:
            per_clip = clip_scores(predictor.window_features(audio), clip, n)
        else:
            per_clip = predictor.clip_probabilities(audio, clip, n)
        rows.update(zip(batch["key"], per_clip.float().cpu().numpy(), strict=True))
    width = predictor.networks[0].trunk.out_features if features else len(predictor.labels)
    out = np.full((len(clips.keys), width), np.nan, np.float32)
    ok = [key in rows for key in clips.keys]
    for i, key in enumerate(clips.keys):
        if key in rows:
            out[i] = rows[key]
    return out, ok
