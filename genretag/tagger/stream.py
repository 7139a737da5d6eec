"""Decode a library on worker processes and score it in batches through genretag.inference.

* :class:`WindowStream` runs in DataLoader workers: each claims the next file, decodes it once
  through :func:`genretag.data.audio.stream` (bounded memory) and cuts the windows
  :class:`genretag.windows.WindowCutter` places (the windows ``test`` scores); windows of many
  files share one :class:`genretag.data.datasets.Batch`.
* :func:`infer` runs the :class:`~genretag.inference.Predictor` on each batch, keeps each file's
  per-model sums until its last window is in, and yields the finished files' clip scores.

Where the model runs: on a GPU, in the main process, fed by the workers. On the CPU, in each
worker, on the batch it has just filled (``WindowStream(..., predictor=)``): every worker
decodes and scores, one core each, and sends back probabilities instead of audio. A decoder
beside a separate inference thread left a core idle whenever one side waited on the other.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from genretag.data import audio
from genretag.data.datasets import Batch
from genretag.inference import Aggregate, Predictor, clip_scores
from genretag.tagger.outputs import truncation_note
from genretag.windows import PadMode, WindowCutter


class WindowStream(IterableDataset):
    """Windows of many files in :class:`Batch` form: ``audio`` (N, T), ``clip`` (N,) into
    ``key`` (the batch's file paths), ``ended``, ``bad`` and ``truncated``.

    Workers claim files one at a time from a shared counter, in the order given (:func:`infer`
    gives several workers the largest first: :func:`longest_first`).
    A file is in ``ended`` (with its decoded length) once all its windows have been sent, in
    this batch or an earlier one from the same worker. ``starts`` of each window come along in
    ``ended`` order for timelines.

    With a ``predictor``, each batch is scored where it was filled: ``outputs`` holds what
    :func:`forward` returns and ``audio`` is empty.
    """

    def __init__(
        self,
        files: Sequence[Path],
        sample_rate: int,
        window: int,
        hop: int,
        batch_size: int,
        pad_mode: PadMode,
        predictor: Predictor | None = None,
        features: bool = False,
    ) -> None:
        self.files = [str(f) for f in files]
        self.sample_rate, self.window, self.hop = sample_rate, window, hop
        self.batch_size, self.pad_mode = batch_size, pad_mode
        self.predictor, self.features = predictor, features
        self.next_file = torch.multiprocessing.Value("q", 0)

    def _claim(self) -> Iterator[int]:
        while True:
            with self.next_file.get_lock():
                index = self.next_file.value
                self.next_file.value += 1
            if index >= len(self.files):
                return
            yield index

    def __iter__(self) -> Iterator[Batch]:
        for batch in self._filled():
            if self.predictor is not None and len(batch["clip"]):
                batch["outputs"] = forward(self.predictor, batch["audio"], self.features)
                batch["audio"] = batch["audio"][:0]
            yield batch

    def _filled(self) -> Iterator[Batch]:
        batch = _Filling(self.batch_size, self.window)
        for index in self._claim():
            path = self.files[index]
            cutter = WindowCutter(self.window, self.hop, self.pad_mode)
            try:
                for block in audio.stream(path, self.sample_rate):
                    for window in cutter.feed(block):
                        if batch.add(path, window):
                            yield batch.take()
                for window in cutter.finish():
                    if batch.add(path, window):
                        yield batch.take()
                batch.ended.append((path, cutter.total, cutter.starts))
                short = audio.truncation(path, cutter.total, self.sample_rate)
                if short is not None:
                    batch.truncated.append(short)
            except audio.AudioDecodeError as error:
                batch.bad.append((path, error.reason))
            except Exception as error:  # a decoder bug on one file must not stop the library
                batch.bad.append((path, f"{type(error).__name__}: {error}"))
        if batch.n or batch.ended or batch.bad:
            yield batch.take()


class _Filling:
    """The batch a worker is filling: windows copied into one preallocated (N, T) tensor."""

    def __init__(self, size: int, window: int) -> None:
        self.size, self.window = size, window
        self._reset()

    def _reset(self) -> None:
        self.audio = torch.empty(self.size, self.window)
        self.keys: list[str] = []
        self.clip: list[int] = []
        self.n = 0
        self.ended: list[tuple[str, int, list[int]]] = []
        self.bad: list[tuple[str, str]] = []
        self.truncated: list[tuple[str, int, int]] = []

    def add(self, path: str, window: np.ndarray) -> bool:
        """Copy one window in; True when the batch is full."""
        if not self.keys or self.keys[-1] != path:
            self.keys.append(path)
        self.audio[self.n] = torch.from_numpy(window)
        self.clip.append(len(self.keys) - 1)
        self.n += 1
        return self.n == self.size

    def take(self) -> Batch:
        batch: Batch = {
            "audio": self.audio[: self.n],
            "clip": torch.tensor(self.clip, dtype=torch.long),
            "key": self.keys,
            "ended": self.ended,  # (path, samples, window starts)
            "bad": self.bad,
            "truncated": self.truncated,
        }
        self._reset()
        return batch


@dataclass
class TrackResult:
    """A finished file: clip ``scores`` (C,), its ``timeline`` (W, C) window scores and window
    ``starts`` in seconds (with ``--segments``), or an ``error``; ``truncated`` names a short
    decode (both lengths) of a file that was still tagged; ``embedding`` (D,) the pooled trunk
    features averaged over its windows (``infer(..., features=True)``)."""

    path: Path
    duration: float = 0.0
    scores: np.ndarray | None = None
    timeline: np.ndarray | None = None
    starts: list[float] = field(default_factory=list)
    error: str | None = None
    truncated: str | None = None
    embedding: np.ndarray | None = None


@dataclass
class _Track:
    """Running per-model window sums (mean) or maxima (max) of one file: (M, C)."""

    total: Tensor | None = None
    count: int = 0
    windows: list[np.ndarray] = field(default_factory=list)
    features: Tensor | None = None  # (D,) sum of the windows' pooled features

    def add(self, probs: Tensor, aggregate: Aggregate, keep: Tensor | None) -> None:
        """``probs`` (M, C), already reduced over this batch's windows of the file."""
        if self.total is None:
            self.total = probs.clone()
        elif aggregate == "max":
            self.total = torch.maximum(self.total, probs)
        else:
            self.total += probs
        if keep is not None:
            self.windows.append(keep.numpy())


def _die_with_parent(worker_id: int) -> None:
    """Worker init: on Linux, end this worker the moment the main process dies (kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        parent = os.getppid()
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)


def infer(
    files: Sequence[Path],
    predictor: Predictor,
    hop: int,
    batch_size: int,
    workers: int,
    aggregate: Aggregate = "mean",
    timeline: bool = False,
    features: bool = False,
) -> Iterator[list[TrackResult]]:
    """Tag ``files``; yields the files finished by each batch (often none, in worker order).
    ``features``: each result's ``embedding`` too, from the same forward pass.

    A file's score is :func:`genretag.inference.clip_scores` over all its windows, per model,
    then :meth:`Predictor.combine`: what ``test`` computes for a clip in one batch. On the CPU
    with ``workers``, the workers run the model too (see the module's docstring).
    """
    in_workers = workers > 0 and predictor.device.type == "cpu"
    dataset = WindowStream(
        longest_first(files) if workers > 1 else files,
        predictor.sample_rate,
        predictor.window,
        hop,
        batch_size,
        predictor.pad_mode,
        predictor if in_workers else None,
        features,
    )
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=predictor.device.type == "cuda",
        prefetch_factor=2 if workers else None,
        in_order=False,
        worker_init_fn=_die_with_parent,
    )
    tracks: dict[str, _Track] = {}
    rate = predictor.sample_rate
    for batch in loader:
        if len(batch["clip"]):
            _accumulate(batch, predictor, tracks, aggregate, timeline, features)
        results = [TrackResult(Path(path), error=reason) for path, reason in batch["bad"]]
        for path, _ in batch["bad"]:
            tracks.pop(path, None)
        short = {path: (got, want) for path, got, want in batch["truncated"]}
        for path, samples, starts in batch["ended"]:
            track = tracks.pop(path)
            per_model = track.total if aggregate == "max" else track.total / track.count
            result = TrackResult(Path(path), samples / rate)
            result.scores = predictor.combine(per_model.unsqueeze(1))[0].numpy()
            if timeline:
                result.timeline = np.concatenate(track.windows)
                result.starts = [s / rate for s in starts]
            if track.features is not None:
                result.embedding = (track.features / track.count).numpy()
            if path in short:
                got, want = short[path]
                result.truncated = truncation_note(got, want, rate)
            results.append(result)
        yield results


def longest_first(files: Sequence[Path]) -> list[Path]:
    """``files`` largest first (ties in their order), for workers that claim them one at a time:
    the last files to start are short ones, so no worker goes on alone long after the others
    (longest-processing-time-first). On 30 real Opus tracks (4 h, 2 workers) it kept both cores
    busier, 187-189% against 182-184%. Sizes come from ``stat``; a file that cannot be read
    goes last, where decoding it reports why."""

    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return -1

    return sorted(files, key=size, reverse=True)


def forward(predictor: Predictor, audio: Tensor, features: bool) -> tuple[Tensor, Tensor | None]:
    """A batch's windows (N, T) -> probabilities (M, N, C) and, with ``features``, the first
    network's pooled features (N, D), on the CPU: ordinary tensors, which a worker can send."""
    if features:
        probs, pooled = predictor.window_outputs(audio)
        return probs.cpu().clone(), pooled.cpu().clone()
    return predictor.window_probabilities(audio).cpu().clone(), None


def _accumulate(
    batch: Batch,
    predictor: Predictor,
    tracks: dict[str, _Track],
    aggregate: Aggregate,
    timeline: bool,
    features: bool = False,
) -> None:
    keys, clip = batch["key"], batch["clip"]
    probs, pooled = batch.get("outputs") or forward(predictor, batch["audio"], features)
    sums = None
    if pooled is not None:
        sums = clip_scores(pooled, clip, len(keys)) * torch.bincount(
            clip, minlength=len(keys)
        ).view(-1, 1)
    reduced = clip_scores(probs, clip, len(keys), "max" if aggregate == "max" else "mean")
    counts = torch.bincount(clip, minlength=len(keys))
    if aggregate == "mean":
        reduced = reduced * counts.view(1, -1, 1)  # sums, so batches add up to the file's mean
    for i, path in enumerate(keys):
        track = tracks.setdefault(path, _Track())
        keep = predictor.combine(probs[:, clip == i]) if timeline else None
        track.add(reduced[:, i], aggregate, keep)
        if sums is not None:
            track.features = sums[i] if track.features is None else track.features + sums[i]
        track.count += int(counts[i])
