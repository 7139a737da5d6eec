"""The one place that knows FSDKaggle2018's layout: metadata files, classes, splits, audio paths.

pandas only (no torch). FSDKaggle2018 (Freesound General-Purpose Audio Tagging Challenge, DCASE
2018 Task 2): 41 AudioSet classes, one label per clip, 16-bit 44.1 kHz mono WAVs of 0.3-30 s;
9,473 training clips (3,710 manually verified, the rest 60-70 % correct) and 1,600 scored test
clips. Two layouts are read, found by what is in ``root``:

* the official release (Zenodo 2552860; ``python -m genretag download fsdkaggle2018``)::

    FSDKaggle2018.audio_train/*.wav   FSDKaggle2018.audio_test/*.wav
    FSDKaggle2018.meta/train_post_competition.csv          fname,label,manually_verified,freesound_id,license
    FSDKaggle2018.meta/test_post_competition_scoring_clips.csv   fname,label,usage,freesound_id,license

* Kaggle's copy::

    audio_train/*.wav   audio_test/*.wav
    train.csv                     fname,label,manually_verified
    test_post_competition.csv     fname,label,usage,freesound_id,license  (9,400 rows; usage
                                  Public/Private, or Ignored for unscored padding clips, label None)
    sample_submission.csv         fname,label  (used for predict when the test labels are absent)

Ignored rows are never scored (dropped from the test split). The validation split is drawn
from the manually verified training clips, stratified by class, by a seeded hash of each file
name (stable when clips are added or missing), or, with ``folds``, is one of K stratified folds
of the verified clips (:func:`fold_assignment`). A trusted list (``genretag spread-labels``'
output, :func:`read_trusted`) promotes unverified clips whose label spreading confirmed to
verified for training; a pseudo-label list (``genretag self-train``, :func:`read_pseudo`) adds
extra training clips from outside the corpus's training list. Audio files listed but absent are dropped with a
warning; when more than ``max_missing`` of a split is absent (a half-extracted download) it is an
error. :func:`synthesize` writes an FSD-shaped corpus (either layout) for tests and the demo.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from genretag.errors import ConfigError

log = logging.getLogger(__name__)

LayoutName = Literal["official", "kaggle"]
VerifiedMode = Literal["all", "verified", "weighted"]
Stage = Literal["train", "val", "test", "predict"]

# The 41 classes of FSDKaggle2018, sorted: the label vocabulary of every Freesound model.
CLASSES: tuple[str, ...] = (
    "Acoustic_guitar", "Applause", "Bark", "Bass_drum", "Burping_or_eructation", "Bus", "Cello",
    "Chime", "Clarinet", "Computer_keyboard", "Cough", "Cowbell", "Double_bass",
    "Drawer_open_or_close", "Electric_piano", "Fart", "Finger_snapping", "Fireworks", "Flute",
    "Glockenspiel", "Gong", "Gunshot_or_gunfire", "Harmonica", "Hi-hat", "Keys_jangling", "Knock",
    "Laughter", "Meow", "Microwave_oven", "Oboe", "Saxophone", "Scissors", "Shatter",
    "Snare_drum", "Squeak", "Tambourine", "Tearing", "Telephone", "Trumpet", "Violin_or_fiddle",
    "Writing",
)  # fmt: skip
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

# A split with more than this share of its listed audio files absent is refused by default.
MAX_MISSING = 0.05

# What each layout holds, relative to the root: (train audio, test audio, train csv, test csvs).
_LAYOUTS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "official": (
        "FSDKaggle2018.audio_train",
        "FSDKaggle2018.audio_test",
        "FSDKaggle2018.meta/train_post_competition.csv",
        ("FSDKaggle2018.meta/test_post_competition_scoring_clips.csv",),
    ),
    "kaggle": (
        "audio_train",
        "audio_test",
        "train.csv",
        ("test_post_competition.csv", "sample_submission.csv"),
    ),
}
_DOWNLOAD_HINT = (
    "download it with `python -m genretag download fsdkaggle2018 --to data/` and pass "
    "--data.root data/FSDKaggle2018"
)


@dataclass(frozen=True)
class Layout:
    """Where one FSDKaggle2018 copy keeps its files."""

    name: LayoutName
    root: Path
    train_audio: Path
    test_audio: Path
    train_csv: Path
    test_csv: Path  # labelled test list, or Kaggle's sample_submission.csv (unlabelled)

    @property
    def test_labelled(self) -> bool:
        """Whether the test list carries labels (False for sample_submission.csv)."""
        return self.test_csv.name != "sample_submission.csv"


def find_layout(root: str | os.PathLike) -> Layout:
    """Recognise the official or Kaggle layout in ``root`` (ConfigError naming what was sought)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data.root: {root} does not exist; {_DOWNLOAD_HINT}")
    for name, (train_audio, test_audio, train_csv, test_csvs) in _LAYOUTS.items():
        if not (root / train_csv).is_file():
            continue
        test = next((root / c for c in test_csvs if (root / c).is_file()), None)
        missing = [p for p in (train_audio, test_audio) if not (root / p).is_dir()]
        if test is None:
            missing.append(" or ".join(test_csvs))
        if missing:
            raise ConfigError(
                f"data.root: {root} looks like FSDKaggle2018's {name} layout ({train_csv} is "
                f"there) but lacks {', '.join(missing)}; the download is incomplete: {_DOWNLOAD_HINT}"
            )
        return Layout(
            name,  # type: ignore[arg-type]
            root,
            root / train_audio,
            root / test_audio,
            root / train_csv,
            test,
        )
    sought = "; ".join(
        f"{name}: {a}/, {b}/, {c}, {' or '.join(d)}" for name, (a, b, c, d) in _LAYOUTS.items()
    )
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
    nested = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("FSDKaggle2018")]
    hint = f"; did you mean --data.root {nested[0]}?" if len(nested) == 1 else ""
    raise ConfigError(
        f"data.root: {root} holds no FSDKaggle2018 layout (looked for {sought}; found "
        f"{', '.join(found) or 'nothing'}){hint}; {_DOWNLOAD_HINT}"
    )


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        # keep_default_na=False: Kaggle's padding rows have the label "None", a string here.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as error:
        raise ConfigError(f"{path}: cannot be read as a CSV file ({error})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing columns {', '.join(missing)} (has {', '.join(frame.columns)}); "
            f"is it FSDKaggle2018's file, unchanged?"
        )
    for column in ("fname", "label"):
        if column in frame:
            frame[column] = frame[column].str.strip()
    return frame


def _check_labels(path: Path, labels: pd.Series) -> None:
    unknown = sorted(set(labels) - set(CLASSES))
    if unknown:
        raise ConfigError(
            f"{path}: {len(unknown)} labels are not FSDKaggle2018 classes: "
            f"{', '.join(unknown[:5])}; the file must use the 41 official class names"
        )


def read_train(layout: Layout) -> pd.DataFrame:
    """The training list: columns fname, label, target (class id), verified (bool); N rows."""
    frame = _read_csv(layout.train_csv, ("fname", "label", "manually_verified"))
    _check_labels(layout.train_csv, frame["label"])
    flags = frame["manually_verified"].str.strip()
    if not flags.isin(["0", "1"]).all():
        bad = flags[~flags.isin(["0", "1"])].iloc[0]
        raise ConfigError(f"{layout.train_csv}: manually_verified must be 0 or 1, found {bad!r}")
    absent = sorted(set(CLASSES) - set(frame["label"]))
    if absent:
        log.warning(
            "%s: %d of the 41 classes have no training clip (%s)",
            layout.train_csv, len(absent), ", ".join(absent[:5]),
        )  # fmt: skip
    return pd.DataFrame(
        {
            "fname": frame["fname"],
            "label": frame["label"],
            "target": frame["label"].map(CLASS_INDEX).astype(np.int64),
            "verified": flags == "1",
        }
    )


def read_test(layout: Layout, scored_only: bool = True) -> pd.DataFrame:
    """The test list: columns fname, label, target (class id, -1 when unknown), usage, scored.

    Kaggle's padding clips (usage ``Ignored``, label ``None``) are never scored: ``scored_only``
    drops them. Kaggle's sample_submission.csv gives file names only (usage ``Unknown``, target
    -1, scored False): enough to predict, not to test.
    """
    if not layout.test_labelled:
        frame = _read_csv(layout.test_csv, ("fname",))
        return pd.DataFrame(
            {
                "fname": frame["fname"],
                "label": "",
                "target": np.int64(-1),
                "usage": "Unknown",
                "scored": False,
            }
        )
    frame = _read_csv(layout.test_csv, ("fname", "label", "usage"))
    usage = frame["usage"].str.strip()
    scored = (usage != "Ignored") & (frame["label"] != "None")
    _check_labels(layout.test_csv, frame.loc[scored, "label"])
    table = pd.DataFrame(
        {
            "fname": frame["fname"],
            "label": frame["label"].where(scored, ""),
            "target": frame["label"].map(CLASS_INDEX).where(scored, -1).astype(np.int64),
            "usage": usage,
            "scored": scored,
        }
    )
    if scored_only:
        if not scored.all():
            log.info(
                "%s: %d unscored (Ignored) rows dropped", layout.test_csv, int((~scored).sum())
            )
        table = table[scored]
    return table.reset_index(drop=True)


def _hash_order(names: pd.Series, seed: int) -> np.ndarray:
    """A seeded pseudo-random number in [0, 1) per name, independent of the row order."""
    return np.array(
        [int(hashlib.sha1(f"{seed}:{n}".encode()).hexdigest()[:12], 16) / 16**12 for n in names]
    )


def validation_mask(train: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Which training rows form the validation split: (N,) bool.

    Per class, ``round(fraction * n)`` of its n manually verified clips (at least 1 and at most
    n - 1 when n >= 2; none when n < 2), chosen by a seeded hash of the file name, so the split
    depends only on (seed, file names) and not on the CSV's order.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction: {fraction} must be between 0 and 1 (exclusive)")
    mask = np.zeros(len(train), bool)
    order = _hash_order(train["fname"], seed)
    for _, rows in train.groupby("label", sort=True).indices.items():
        rows = rows[train["verified"].to_numpy()[rows]]
        n = len(rows)
        if n < 2:
            continue
        k = min(max(round(fraction * n), 1), n - 1)
        mask[rows[np.argsort(order[rows], kind="stable")[:k]]] = True
    return mask


def fold_assignment(train: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """The fold 0..folds-1 of each verified training row, -1 for the unverified: (N,) int64.

    Stratified: within each class the verified clips, ordered by a seeded hash of the file name,
    are dealt round-robin over the folds, each class starting where the previous one stopped, so
    every fold holds ``n // folds`` or one more clip of each class and the folds' sizes differ by
    at most one. Every verified clip is in exactly one fold; the assignment depends only on
    (folds, seed, file names, labels), not on the CSV's order.
    """
    if folds < 2:
        raise ConfigError(f"data.folds: {folds} must be at least 2 (or 0 for data.val_fraction)")
    fold = np.full(len(train), -1, np.int64)
    order = _hash_order(train["fname"], seed)
    verified = train["verified"].to_numpy(bool)
    dealt = 0
    for _, rows in train.groupby("label", sort=True).indices.items():
        rows = rows[verified[rows]]
        rows = rows[np.argsort(order[rows], kind="stable")]
        fold[rows] = (dealt + np.arange(len(rows))) % folds
        dealt += len(rows)
    return fold


def read_trusted(path: str | os.PathLike) -> set[str]:
    """The clips a ``genretag spread-labels`` CSV marks trusted (column ``trusted`` = yes)."""
    frame = _read_csv(Path(path), ("clip", "trusted"))
    flags = frame["trusted"].str.strip().str.lower()
    if not flags.isin(["yes", "no"]).all():
        bad = flags[~flags.isin(["yes", "no"])].iloc[0]
        raise ConfigError(f"data.trusted: {path}: trusted must be yes or no, found {bad!r}")
    return set(frame["clip"].str.strip()[flags == "yes"])


def read_pseudo(path: str | os.PathLike) -> pd.DataFrame:
    """A pseudo-label CSV (``genretag self-train``): columns path, label, target; N rows.

    Paths are as written (absolute, or relative to the current folder).
    """
    frame = _read_csv(Path(path), ("path", "label"))
    _check_labels(Path(path), frame["label"])
    frame["target"] = frame["label"].map(CLASS_INDEX).astype(np.int64)
    return frame


def present(
    frame: pd.DataFrame, folder: Path, what: str, max_missing: float = MAX_MISSING
) -> pd.DataFrame:
    """Rows of ``frame`` whose ``fname`` is in ``folder``; the missing ones are counted.

    None present, or more than ``max_missing`` (a share) missing: ConfigError, since that is a
    wrong folder or a half-extracted download. Fewer: a warning with the count, and the rows
    are dropped.
    """
    if len(frame) == 0:
        return frame
    with os.scandir(folder) as entries:
        names = {e.name for e in entries}
    there = frame["fname"].isin(names).to_numpy()
    missing = int((~there).sum())
    if missing == 0:
        return frame
    first = frame["fname"].iloc[int(np.argmin(there))]
    where = f"{missing} of the {len(frame)} {what} clips are missing from {folder} (first: {first})"
    if missing == len(frame):
        raise ConfigError(f"data.root: {where}; is the audio extracted there? {_DOWNLOAD_HINT}")
    if missing > max_missing * len(frame):
        raise ConfigError(
            f"data.root: {where}: more than {max_missing:.0%}, so the download looks incomplete; "
            f"extract the archive again (`python -m genretag download fsdkaggle2018 --to data/`), "
            f"or raise --data.max_missing to go on without them"
        )
    log.warning("%s; they are left out", where)
    return frame[there].reset_index(drop=True)


@dataclass(frozen=True)
class FSDIndex:
    """One FSDKaggle2018 copy: its layout, the training list (with ``val``) and the test list."""

    layout: Layout
    train: pd.DataFrame  # fname, label, target, verified, trusted, val
    test: pd.DataFrame  # fname, label, target, usage (scored clips; all clips if unlabelled)
    unscored: pd.DataFrame  # Kaggle's Ignored padding clips (for a complete Kaggle submission)

    def rows(
        self, stage: Stage, verified: VerifiedMode = "all", with_unscored: bool = False
    ) -> pd.DataFrame:
        """The rows of one stage: ``train`` (filtered by ``verified``), ``val``, ``test`` (the
        scored clips) or ``predict`` (the test clips, with the unscored ones if asked)."""
        if stage == "test" or stage == "predict":
            if stage == "predict" and with_unscored and len(self.unscored):
                return pd.concat([self.test, self.unscored], ignore_index=True)
            return self.test
        if stage == "val":
            return self.train[self.train["val"]]
        train = self.train[~self.train["val"]]
        return train[train["verified"] | train["trusted"]] if verified == "verified" else train

    def clips(
        self,
        stage: Stage,
        verified: VerifiedMode = "all",
        unverified_weight: float = 0.5,
        with_unscored: bool = False,
    ) -> tuple[list[str], list[str], np.ndarray, np.ndarray | None]:
        """(paths, keys = file names, targets (N,) int64 class ids, weights (N,) float32 or None).

        Weights only for ``train`` in ``weighted`` mode: 1 for verified (or trusted) clips, else
        ``unverified_weight``. Unknown test targets are -1.
        """
        rows = self.rows(stage, verified, with_unscored)
        folder = self.layout.train_audio if stage in ("train", "val") else self.layout.test_audio
        weights = None
        if stage == "train" and verified == "weighted":
            sure = (rows["verified"] | rows["trusted"]).to_numpy(bool)
            weights = np.where(sure, 1.0, unverified_weight)
            weights = weights.astype(np.float32)
        paths = [str(folder / name) for name in rows["fname"]]
        return paths, list(rows["fname"]), rows["target"].to_numpy(np.int64), weights


def load(
    root: str | os.PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_missing: float = MAX_MISSING,
    folds: int = 0,
    fold: int = 0,
    trusted: str | os.PathLike | None = None,
) -> FSDIndex:
    """Read either layout, draw the validation split, and keep the clips whose audio is there.

    ``folds`` K >= 2: the validation split is fold ``fold`` of :func:`fold_assignment` instead
    of ``val_fraction``. ``trusted``: a spread-labels CSV whose trusted clips count as verified
    for training (the validation split is drawn from the manually verified clips alone).
    """
    layout = find_layout(root)
    train = read_train(layout)
    # before dropping missing files, so the split does not move when a file goes missing
    if folds:
        if not 0 <= fold < folds:
            raise ConfigError(f"data.fold: {fold} must be in 0..{folds - 1} (data.folds={folds})")
        train["val"] = fold_assignment(train, folds, seed) == fold
    else:
        train["val"] = validation_mask(train, val_fraction, seed)
    names = read_trusted(trusted) if trusted is not None else set()
    train["trusted"] = train["fname"].isin(names) & ~train["verified"]
    if trusted is not None:
        log.info("%s: %d unverified training clips trusted", trusted, int(train["trusted"].sum()))
    train = present(train, layout.train_audio, "training", max_missing)
    everything = read_test(layout, scored_only=False)
    # An unlabelled list (sample_submission.csv) is all "test": it can be predicted, not scored.
    scored = everything["scored"] | (not layout.test_labelled)
    test = present(
        everything[scored].reset_index(drop=True), layout.test_audio, "test", max_missing
    )
    unscored = everything[~scored].reset_index(drop=True)
    if len(unscored):
        unscored = present(unscored, layout.test_audio, "unscored test", max_missing)
    log.info(
        "FSDKaggle2018 (%s layout) in %s: %d training clips (%d verified, %d for validation), "
        "%d test clips", layout.name, layout.root, len(train), int(train["verified"].sum()),
        int(train["val"].sum()), len(test),
    )  # fmt: skip
    return FSDIndex(layout, train, test, unscored)
