"""``genretag baseline``: hand-made features + logistic regression, logged like any other run.

    genretag baseline --config configs/fma_small.yaml [--out lightning_logs] [--data.* ...]

The classical baseline of the FMA paper (Defferrard et al., 2017), on the data module of a
training config: per clip, librosa's MFCC (20), chroma (12), spectral centroid, bandwidth,
rolloff, contrast (7 bands) and zero-crossing rate, each summarised by its mean and standard
deviation over the whole decoded clip (86 numbers); standardised; one logistic regression per
label (``class_weight="balanced"``) on the multi-label targets. Validation and test are scored
with genretag.metrics (macro ROC-AUC / PR-AUC, bootstrap intervals on test) and written as a
TensorBoard version folder ``<out>/baseline/version_N`` that ``genretag compare`` reads.
Files that fail to decode are skipped and counted.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from genretag.errors import ConfigError, run_command

log = logging.getLogger(__name__)

TRUNK = "baseline-logreg"


def clip_features(audio: np.ndarray, sr: int) -> np.ndarray:
    """Mono waveform (T,) at ``sr`` Hz -> (86,) float32: mean and std over time of each feature."""
    import librosa

    spectrum = np.abs(librosa.stft(audio, n_fft=2048, hop_length=512))
    frames = [
        librosa.feature.mfcc(
            S=librosa.power_to_db(librosa.feature.melspectrogram(S=spectrum**2, sr=sr)), n_mfcc=20
        ),
        librosa.feature.chroma_stft(S=spectrum, sr=sr),
        librosa.feature.spectral_centroid(S=spectrum, sr=sr),
        librosa.feature.spectral_bandwidth(S=spectrum, sr=sr),
        librosa.feature.spectral_rolloff(S=spectrum, sr=sr),
        librosa.feature.spectral_contrast(S=spectrum, sr=sr),
        librosa.feature.zero_crossing_rate(audio, frame_length=2048, hop_length=512),
    ]  # each (features, frames)
    stacked = np.concatenate(frames, axis=0)
    return np.concatenate([stacked.mean(axis=1), stacked.std(axis=1)]).astype(np.float32)


def _features_of(job: tuple[int, str, int]) -> tuple[int, np.ndarray | None, str | None]:
    """Worker: (index, path, sr) -> (index, features or None, why it failed)."""
    from genretag.data.audio import AudioDecodeError, decode

    index, path, sr = job
    try:
        audio = decode(path, sr)
    except AudioDecodeError as error:
        return index, None, error.reason
    except OSError as error:
        return index, None, error.strerror or str(error)
    if len(audio) < 2048:
        return index, None, f"only {len(audio)} samples"
    return index, clip_features(audio, sr), None


def featurise(paths: list[str], sr: int, workers: int) -> dict[int, np.ndarray]:
    """Features (86,) of each of ``paths`` that decodes, by index; the others are logged.

    ``workers`` spawned processes decode and compute (0: in this process).
    """
    from tqdm import tqdm

    jobs = [(i, p, sr) for i, p in enumerate(paths)]
    results: dict[int, np.ndarray] = {}
    failed = 0
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 0 else None
    try:
        done = (
            pool.imap_unordered(_features_of, jobs, chunksize=4)
            if pool
            else map(_features_of, jobs)
        )
        for index, features, reason in tqdm(done, total=len(jobs), desc="features"):
            if features is None:
                failed += 1
                log.warning("skipped %s: %s (%d bad files so far)", paths[index], reason, failed)
            else:
                results[index] = features
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return results


def next_version(root: Path) -> Path:
    """``root/version_N`` with N one more than the largest there (as Lightning numbers them)."""
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    return root / f"version_{max(taken, default=-1) + 1}"


def run(configs: list[str], overrides: list[str], out: str, workers: int) -> Path:
    """Fit and score the baseline; returns the version folder it wrote."""
    import torch
    import yaml
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from torch.utils.tensorboard import SummaryWriter

    from genretag.commands.prepare import load_datamodule
    from genretag.metrics import bootstrap_intervals, multilabel_scores

    datamodule = load_datamodule(configs, overrides)
    if datamodule.task != "multilabel":
        raise ConfigError("baseline: the data module must be multi-label (an FMA config)")
    labels = list(datamodule.label_names)
    folder = next_version(Path(out) / "baseline")
    folder.mkdir(parents=True)
    writer = SummaryWriter(str(folder))  # its first event marks the start of the run
    sr = datamodule.sample_rate
    clips = {stage: datamodule.clip_list(stage) for stage in ("train", "val", "test")}
    paths = [path for clip_list in clips.values() for path in clip_list.paths]
    decoded = featurise(paths, sr, workers)  # one pool for all stages: workers start once
    features, targets, offset = {}, {}, 0
    for stage, clip_list in clips.items():
        keep = [i for i in range(len(clip_list)) if offset + i in decoded]
        if not keep:
            raise ConfigError(
                f"baseline: none of the {len(clip_list)} {stage} files could be decoded"
            )
        features[stage] = np.stack([decoded[offset + i] for i in keep])
        targets[stage] = np.asarray(clip_list.targets)[keep].round().astype(int)
        offset += len(clip_list)
    skipped = len(paths) - len(decoded)
    start = time.perf_counter()
    model = make_pipeline(
        StandardScaler(),
        OneVsRestClassifier(LogisticRegression(class_weight="balanced", max_iter=2000)),
    )
    model.fit(features["train"], targets["train"])
    log.info("fitted on %d clips in %.1f s", len(features["train"]), time.perf_counter() - start)
    coefficients = sum(
        e.coef_.size + e.intercept_.size for e in model[-1].estimators_ if hasattr(e, "coef_")
    )
    hparams: dict[str, Any] = {
        "trunk": TRUNK,
        "labels": labels,
        "task": "multilabel",
        "sample_rate": sr,
        "window_seconds": None,
        "features": "librosa mfcc20, chroma12, centroid, bandwidth, rolloff, contrast7, zcr: mean+std",
        "n_params": int(coefficients),
        "data": _data_hparams(datamodule),
    }
    (folder / "hparams.yaml").write_text(yaml.safe_dump(hparams, sort_keys=False))
    writer.add_scalar("epoch", 0.0, 0)
    writer.add_scalar("skipped_files", float(skipped), 0)
    for stage in ("val", "test"):
        probs = torch.from_numpy(model.predict_proba(features[stage])).float()
        target = torch.from_numpy(targets[stage]).float()
        scores = multilabel_scores(probs, target)
        per_label = scores.pop("roc_auc_per_label")
        for name, value in scores.items():
            writer.add_scalar(f"{stage}/{name}", float(value), 0)
        if stage == "test":
            for name, (lo, hi) in bootstrap_intervals(probs, target).items():
                writer.add_scalar(f"test/{name}_lo", lo, 0)
                writer.add_scalar(f"test/{name}_hi", hi, 0)
        for label, value in zip(labels, per_label.tolist(), strict=True):
            if value == value:  # not NaN
                writer.add_scalar(f"{stage}_roc_auc_per_label/{label}", value, 0)
        log.info("%s: ROC-AUC %.4f, PR-AUC %.4f", stage, scores["roc_auc"], scores["pr_auc"])
    writer.close()
    if skipped:
        log.warning("%d files could not be decoded and were left out", skipped)
    return folder


def _data_hparams(datamodule: Any) -> dict[str, Any]:
    """What chose the tracks and labels (for compare's grouping), not where they are."""
    cls = type(datamodule)
    data = {"class_path": f"{cls.__module__}.{cls.__name__}"}
    for key, attr in (("subset", "subset"), ("labels", "label_mode"), ("min_tracks", "min_tracks")):
        if hasattr(datamodule, attr):
            data[key] = getattr(datamodule, attr)
    return data


def main(argv: list[str] | None = None) -> int:
    """``genretag baseline ...``; errors are one line (genretag.errors.run_command)."""
    return run_command("baseline", _main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="genretag baseline",
        description="librosa features + logistic regression on a config's data, logged for compare",
    )
    parser.add_argument("--config", action="append", required=True, help="a training config (YAML)")
    parser.add_argument("--out", default="lightning_logs", help="writes <out>/baseline/version_N")
    parser.add_argument(
        "--workers", type=int, default=2, help="decoding processes (0: in this process)"
    )
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("--") and not o.startswith("--data.")]
    if bad:
        raise ConfigError(
            f"baseline: unknown option {bad[0]} (only --data.* settings pass through)"
        )
    folder = run(args.config, overrides, args.out, max(0, args.workers))
    print(folder)
    return 0
