"""The windows every path scores: where they start, how a short clip is padded, how they are cut.

validate/test/predict, ``genretag tag``, the beets plugin, embed and the cluster runner all cut a
clip into these windows, so one model gives one answer everywhere:

* :func:`window_starts` places the windows: every ``hop`` samples from 0 while a window ends
  before the audio does, then one window that ends exactly at the end. A clip no longer than
  one window is one window, padded the checkpoint's way (``pad_mode``: zeros, or the clip
  repeated, :func:`fit_length`).
* :func:`windows` cuts a decoded clip; :class:`WindowCutter` cuts the same windows from a stream
  of blocks, holding at most a window and a block in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np

PadMode = Literal["zero", "loop"]


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
