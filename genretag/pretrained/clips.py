"""Deterministic test clips for the musicnn fidelity check, in plain numpy (no other import).

``benchmarks/musicnn_reference.py`` runs musicnn's own code on these clips in its TensorFlow
virtualenv (where genretag is not installed: it loads this file by path), and
tests/test_pretrained.py regenerates them to compare the port with what musicnn computed. Only
integer arithmetic and sines: the same samples on any numpy. Audio is never committed.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
PATCH = 187 * 256  # samples of one musicnn patch (187 frames at hop 256)
LENGTH = 2 * PATCH + 5_000  # two whole patches and a tail that musicnn drops


def _noise(n: int, seed: int) -> np.ndarray:
    """(n,) float64 in [-1, 1): a 32-bit linear congruential generator (Numerical Recipes)."""
    state = np.uint64(seed)
    out = np.empty(n, np.float64)
    for i in range(n):  # n is small (a few thousand per burst)
        state = (np.uint64(1664525) * state + np.uint64(1013904223)) % np.uint64(2**32)
        out[i] = float(state) / 2**31 - 1.0
    return out


def _tone(t: np.ndarray, f0: float, harmonics: int) -> np.ndarray:
    return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))


def reference_clips() -> dict[str, np.ndarray]:
    """Three mono float32 clips of LENGTH samples at 16 kHz: a chord with drums, a bass line with
    hats, a slow pad. Peaks below 0.9."""
    t = np.arange(LENGTH) / SAMPLE_RATE
    beat = (t * 2.0) % 1.0  # 120 bpm
    kick_env = np.exp(-beat * 30.0)
    burst = np.zeros(LENGTH)
    for start in range(0, LENGTH, SAMPLE_RATE // 4):
        n = min(800, LENGTH - start)
        burst[start : start + n] = _noise(n, 7 + start) * np.exp(-np.arange(n) / 150.0)
    chord = sum(_tone(t, f, 6) for f in (220.0, 277.18, 329.63)) / 3
    drums = np.sin(2 * np.pi * 60.0 * t) * kick_env + 0.3 * burst
    bass_f = np.where((t % 2.0) < 1.0, 55.0, 73.42)
    bass = np.sin(2 * np.pi * np.cumsum(bass_f) / SAMPLE_RATE) * (0.5 + 0.5 * kick_env)
    pad = sum(_tone(t, f, 3) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.2 * t)) for f in (130.81, 196.0))
    clips = {"chord_drums": 0.5 * chord + 0.4 * drums, "bass_hats": 0.6 * bass + 0.25 * burst,
             "slow_pad": 0.3 * pad}  # fmt: skip
    return {k: (0.85 * v / np.abs(v).max()).astype(np.float32) for k, v in clips.items()}
