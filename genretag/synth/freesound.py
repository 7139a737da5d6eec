"""A small synthetic corpus in FSDKaggle2018's exact layouts (official or Kaggle's), for tests
and the Freesound demo: one recognisable sound per class, noisy unverified labels as in the
real training CSV, and the real CSV columns (genretag.data.freesound reads it like the real one).

Beside the layout it writes ``synthetic_truth.csv`` (fname, label = the class whose sound the clip
carries, wrong = whether the training CSV's label differs): what the recipe benchmark measures
label spreading against. FSDKaggle2018 itself has no such file and nothing in genretag reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from genretag.data.freesound import _LAYOUTS, CLASSES, LayoutName

TRUTH_CSV = "synthetic_truth.csv"


def _class_sound(k: int, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A recognisable sound for class ``k``: (T,) float32 in [-1, 1].

    Timbre by ``k % 3`` (harmonic tone, noise band, percussive tone bursts) and pitch by
    ``k // 3`` (14 steps from 150 Hz to ~4.6 kHz), with jitter and background noise.
    """
    n = max(1, round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 150.0 * 2 ** (0.38 * (k // 3)) * rng.uniform(0.97, 1.03)
    kind = k % 3
    if kind == 0:
        x = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3))
    elif kind == 1:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / sr)
        spectrum[np.abs(freqs - f0) > 0.2 * f0] = 0
        x = np.fft.irfft(spectrum, n)
    else:
        rate = rng.uniform(3.0, 6.0)
        envelope = np.exp(-12.0 * ((t * rate) % 1.0) / rate)
        x = np.sin(2 * np.pi * f0 * t) * envelope
    x = np.asarray(x, np.float64)
    x = x / max(1e-9, float(np.abs(x).max())) * rng.uniform(0.3, 0.8)
    return (x + 0.01 * rng.standard_normal(n)).clip(-1, 1).astype(np.float32)


def synthesize(
    root: str | os.PathLike,
    layout: LayoutName = "official",
    train_per_class: int = 3,
    verified_per_class: int = 2,
    test_per_class: int = 1,
    ignored: int = 3,
    seconds: tuple[float, float] = (0.3, 3.0),
    long_clips: int = 1,
    label_noise: float = 0.3,
    sr: int = 44_100,
    seed: int = 0,
    n_classes: int = len(CLASSES),
) -> Path:
    """Write an FSD-shaped corpus in ``layout`` under ``root`` (16-bit 44.1 kHz mono WAVs).

    Per class: ``train_per_class`` training clips, the first ``verified_per_class`` manually
    verified, and ``test_per_class`` test clips (Public/Private alternating); the Kaggle layout
    also gets ``ignored`` unscored padding clips (label None) and sample_submission.csv. Lengths
    are log-uniform in ``seconds``; the first training clip is 0.3 s and ``long_clips`` training
    clips are 30 s (the real range). ``n_classes`` < 41 keeps only the first classes (a
    smaller corpus for quick experiments; the model still has 41 outputs). An unverified clip carries another class's sound with
    probability ``label_noise`` (the real ones are 60-70 % correct; verified clips are always
    right), drawn from ``seed``. Returns ``root``.
    """
    import soundfile as sf  # audio writing only here; metadata reading stays pandas-only

    root = Path(root)
    rng = np.random.default_rng(seed)
    spec = _LAYOUTS[layout]
    train_audio, test_audio, train_csv = root / spec[0], root / spec[1], root / spec[2]
    test_csv = root / spec[3][0]
    for folder in (train_audio, test_audio, train_csv.parent):
        folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()

    def write(folder: Path, k: int, seconds_: float) -> tuple[str, int]:
        name = f"{int(rng.integers(16**8)):08x}.wav"
        while name in used:
            name = f"{int(rng.integers(16**8)):08x}.wav"
        used.add(name)
        freesound_id = int(rng.integers(1_000, 400_000))
        audio = _class_sound(k, seconds_, sr, rng)
        sf.write(folder / name, audio, sr, subtype="PCM_16")
        return name, freesound_id

    def length() -> float:
        lo, hi = seconds
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    licenses = ("Attribution", "Creative Commons 0")
    train_rows, test_rows, truth_rows = [], [], []
    classes = CLASSES[:n_classes]
    for i in range(train_per_class):
        for k, label in enumerate(classes):
            verified = i < verified_per_class
            sound = k
            if not verified and rng.random() < label_noise:
                sound = int((k + rng.integers(1, len(classes))) % len(classes))
            long_ = i == train_per_class - 1 and k < long_clips
            seconds_ = 0.3 if (i == 0 and k == 0) else 30.0 if long_ else length()
            name, fid = write(train_audio, sound, seconds_)
            train_rows.append((name, label, int(verified), fid, licenses[fid % 2]))
            truth_rows.append((name, CLASSES[sound], sound != k))
    for i in range(test_per_class):
        for k, label in enumerate(classes):
            name, fid = write(test_audio, k, length())
            usage = "Public" if (i + k) % 2 == 0 else "Private"
            test_rows.append((name, label, usage, fid, licenses[fid % 2]))
    if layout == "kaggle":
        for _ in range(ignored):
            name, fid = write(test_audio, int(rng.integers(len(classes))), length())
            test_rows.append((name, "None", "Ignored", fid, licenses[fid % 2]))
    train = pd.DataFrame(
        train_rows, columns=["fname", "label", "manually_verified", "freesound_id", "license"]
    ).sort_values("fname")
    test = pd.DataFrame(
        test_rows, columns=["fname", "label", "usage", "freesound_id", "license"]
    ).sort_values("fname")
    if layout == "kaggle":
        train = train[["fname", "label", "manually_verified"]]
        pd.DataFrame({"fname": test["fname"], "label": "Laughter Hi-hat Flute"}).to_csv(
            root / "sample_submission.csv", index=False
        )
    train.to_csv(train_csv, index=False)
    truth = pd.DataFrame(truth_rows, columns=["fname", "label", "wrong"]).sort_values("fname")
    truth.to_csv(root / TRUTH_CSV, index=False)
    test.to_csv(test_csv, index=False)
    return root
