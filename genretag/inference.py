"""The one inference path: windows -> batched probabilities -> clip scores.

validate/test/predict (genretag.task), ``genretag tag`` (genretag.tagger) and the beets plugin
all score a clip through these functions, so one model gives one answer everywhere:

* :func:`window_starts` places the windows: every ``hop`` samples from 0 while a window ends
  before the audio does, then one window that ends exactly at the end. A clip no longer than
  one window is one window, padded the checkpoint's way (``pad_mode``: zeros, or the clip
  repeated). :func:`windows` cuts a decoded clip; :class:`WindowCutter` cuts the same windows
  from a stream of blocks, holding at most a window and a block in memory.
* :class:`Predictor` runs one model or an ensemble on a batch of windows (N, T) and gives each
  model's probabilities (sigmoid for genres, softmax for Freesound; the head decides).
* :func:`clip_scores` averages (or maxes) the windows of each clip, and
  :meth:`Predictor.combine` merges the models of an ensemble (arithmetic, geometric, weighted).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from genretag.errors import ConfigError
from genretag.features import FRONTEND_KEYS

if TYPE_CHECKING:
    from genretag.task import TaggingTask

log = logging.getLogger(__name__)

PadMode = Literal["zero", "loop"]
Aggregate = Literal["mean", "max"]
Combine = Literal["arithmetic", "geometric"]
Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")


# -- windows ---------------------------------------------------------------------------------------
def fit_length(x: np.ndarray, length: int, mode: PadMode = "zero") -> np.ndarray:
    """Pad (zeros, or by repeating the clip) or cut (T,) to exactly ``length`` samples."""
    if len(x) >= length:
        return x[:length]
    if mode == "loop" and len(x) > 0:
        return np.tile(x, math.ceil(length / len(x)))[:length]
    return np.pad(x, (0, length - len(x)))


def window_starts(total: int, length: int, hop: int | None = None) -> list[int]:
    """Start samples of the windows that cover ``total`` samples (see the module docstring).

    >>> window_starts(30, 10), window_starts(31, 10), window_starts(5, 10)
    ([0, 10, 20], [0, 10, 20, 21], [0])
    """
    hop = hop or length
    if total <= length:
        return [0]
    stepped = range(0, total - length, hop)  # windows that end before the audio does
    return [*stepped, total - length]


def windows(
    x: np.ndarray, length: int, hop: int | None = None, mode: PadMode = "zero"
) -> np.ndarray:
    """The windows of a decoded clip (T,): (W, length), W = len(window_starts(T, length, hop))."""
    if len(x) <= length:
        return fit_length(x, length, mode)[None]
    return np.stack([x[s : s + length] for s in window_starts(len(x), length, hop)])


class WindowCutter:
    """The windows of :func:`windows`, cut from a stream of blocks in bounded memory.

    ``feed`` each block (n,) and take the windows it completes; ``finish`` gives the last one.
    A stepped window is only sent once a sample beyond its end has arrived (until then it may
    be the end-aligned last window); ``starts`` lists the start sample of every window sent.
    """

    def __init__(self, length: int, hop: int | None = None, pad_mode: PadMode = "zero") -> None:
        self.length, self.hop, self.pad_mode = length, hop or length, pad_mode
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0  # absolute sample index of buf[0]
        self.total = 0  # samples fed so far
        self.next_start = 0  # next stepped window
        self.starts: list[int] = []

    def feed(self, block: np.ndarray) -> Iterator[np.ndarray]:
        self.buf = np.concatenate([self.buf, block]) if len(self.buf) else block
        self.total += len(block)
        while self.next_start + self.length < self.total:
            at = self.next_start - self.buf_start
            self.starts.append(self.next_start)
            yield self.buf[at : at + self.length]
            self.next_start += self.hop
        keep_from = min(self.next_start, max(0, self.total - self.length))
        if keep_from > self.buf_start:
            self.buf = self.buf[keep_from - self.buf_start :]
            self.buf_start = keep_from

    def finish(self) -> Iterator[np.ndarray]:
        """The last window: end-aligned, or the whole (padded) stream if it is one window long."""
        if self.total <= self.length:
            self.starts.append(0)
            yield fit_length(self.buf, self.length, self.pad_mode)
            return
        start = self.total - self.length
        self.starts.append(start)
        yield self.buf[start - self.buf_start :]


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
    """One model, or several with the same labels, rate, window and padding (an ensemble).

    ``window_probabilities`` gives every model's probabilities for a batch of windows, in the
    first model's label order; ``combine`` merges the models' clip scores into one.
    """

    def __init__(
        self,
        models: Sequence[TaggingTask],
        combine: Combine = "arithmetic",
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not models:
            raise ConfigError("no model to predict with: give at least one checkpoint")
        names = list(names or [f"model {i}" for i in range(len(models))])
        first = models[0]
        self.labels = [str(label) for label in first.hparams["labels"]]
        self.task = first.hparams["task"]
        self.sample_rate = int(first.hparams["sample_rate"])
        self.window_seconds = float(first.hparams["window_seconds"])
        self.pad_mode: PadMode = first.hparams.get("pad_mode") or "zero"
        self.genre_tree: dict[str, list[str]] = dict(first.hparams.get("genre_tree") or {})
        self.genre_map: dict | None = first.hparams.get("genre_map")  # tag's default map
        self.window = round(self.window_seconds * self.sample_rate)
        self.device = next(first.parameters()).device
        self.models, self.orders = [], []
        for name, model in zip(names, models, strict=True):
            self._check_member(name, names[0], model)
            labels = [str(label) for label in model.hparams["labels"]]
            self.models.append(model)
            self.orders.append(
                torch.tensor([labels.index(label) for label in self.labels], device=self.device)
            )
        if weights is not None and len(weights) != len(models):
            raise ConfigError(
                f"ensemble weights: {len(weights)} weights for {len(models)} checkpoints"
            )
        w = torch.tensor(weights if weights is not None else [1.0] * len(models))
        if not bool((w >= 0).all()) or float(w.sum()) <= 0:
            raise ConfigError(f"ensemble weights: {w.tolist()} must be >= 0 with a positive sum")
        self.weights = (w / w.sum()).view(-1, 1, 1).to(self.device)
        # per label, the F1-best validation threshold of each member, averaged (tag --threshold auto)
        self.thresholds = torch.stack(
            [
                m.label_thresholds[o].float().cpu()
                for m, o in zip(self.models, self.orders, strict=True)
            ]
        ).mean(0)
        self.combine_mode = combine

    def _check_member(self, name: str, first_name: str, model: TaggingTask) -> None:
        hp = model.hparams
        mine = (hp["task"], int(hp["sample_rate"]), float(hp["window_seconds"]))
        if mine != (self.task, self.sample_rate, self.window_seconds) or set(
            map(str, hp["labels"])
        ) != set(self.labels):
            raise ConfigError(
                f"{name}: cannot be averaged with {first_name} (task, sample rate, window or "
                f"labels differ); an ensemble needs models trained for the same labels"
            )
        frontend = {k: hp.get(k) for k in FRONTEND_KEYS}
        theirs = {k: self.models[0].hparams.get(k) for k in FRONTEND_KEYS} if self.models else None
        if theirs is not None and frontend != theirs:
            raise ConfigError(
                f"{name}: its front-end {frontend} differs from {first_name}'s {theirs}; "
                f"ensemble members must share the front-end"
            )

    @torch.inference_mode()
    def window_probabilities(self, audio: Tensor) -> Tensor:
        """Windows (N, T) float32 at ``sample_rate`` -> probabilities (M, N, C) float32."""
        audio = audio.to(self.device, non_blocking=True)
        out = []
        for model, order in zip(self.models, self.orders, strict=True):
            out.append(model.head.probabilities(model(audio).float())[:, order])
        return torch.stack(out)

    def combine(self, per_model: Tensor) -> Tensor:
        """Clip scores of every model (M, B, C) -> the ensemble's (B, C)."""
        if len(per_model) == 1:
            return per_model[0]
        w = self.weights.to(per_model.device)
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


def for_inference(
    model: TaggingTask, device: torch.device, precision: Precision = "fp32"
) -> TaggingTask:
    """``model`` on ``device`` in eval mode, made faster; for inference only.

    Each eval-mode BatchNorm2d is folded into the Conv2d before it, and on the CPU the convs run
    channels-last (2-3x faster conv + max-pool): outputs unchanged (~1e-6). ``precision``
    then sets the trunk's arithmetic (the log-mel front-end always stays fp32):

    * ``fp32``: as trained.
    * ``bf16``: the trunk's weights and activations in bfloat16 (the small head stays fp32).
      Fast only where oneDNN has bf16 kernels (AVX-512 BF16 / AMX CPUs, GPUs); on other CPUs
      the convs fall back to a slow path (~15x slower).
    * ``int8``: the GRU and Linear layers dynamically quantized (int8 weights, CPU only); the
      convs stay fp32.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    model = fold_batch_norms(model.to(device).eval())
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    if precision == "bf16":
        return _bf16(model, device)
    if precision == "int8":
        return _int8(model, device)
    return model


class _Cast(nn.Module):
    """Runs ``inner`` on its input cast to ``dtype``; the output comes back float32."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.to(self.dtype)).float()


def _bf16(model: TaggingTask, device: torch.device) -> TaggingTask:
    """The trunk (B, n_mels, frames) in bfloat16 between the fp32 front-end and head."""
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("--precision bf16: this CPU has no bf16 kernels (AVX-512 BF16); much slower")
    model.trunk = _Cast(model.trunk.to(torch.bfloat16), torch.bfloat16)
    return model


def _int8(model: TaggingTask, device: torch.device) -> TaggingTask:
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


def load_predictor(
    paths: Sequence[str],
    device: torch.device,
    combine: Combine = "arithmetic",
    weights: Sequence[float] | None = None,
    precision: Precision = "fp32",
    setting: str = "--ckpt",
) -> Predictor:
    """A Predictor over checkpoint files (loaded as data, see genretag.task.load_model), each
    model at ``precision`` (see :func:`for_inference`); ``setting`` names them in errors."""
    from genretag.task import load_model

    models = [for_inference(load_model(path), device, precision) for path in paths]
    return Predictor(models, combine, weights, names=[f"{setting} {p}" for p in paths])
