"""Fixtures: small FMA-layout corpora built under tmp_path (real MP3s, real tracks.csv header)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genretag.data import fma

# (genres, genres_all) per fixture genre: Rock, Electronic, Hip-Hop, and Punk (Rock's child) + Techno.
GENRE_SETS = [
    ("[12]", "[12]"),
    ("[15]", "[15]"),
    ("[21]", "[21]"),
    ("[25, 181]", "[25, 12, 181, 15]"),
]
TONES = [220.0, 440.0, 880.0, 1760.0]


@dataclass
class Corpus:
    meta_dir: Path
    audio_dir: Path
    track_ids: list[int]

    def path(self, track_id: int) -> Path:
        return self.audio_dir / fma.audio_relpath(track_id)


def write_mp3(
    path: Path, seconds: float, freq: float, sr: int = 44_100, channels: int = 2, seed: int = 0
) -> None:
    """A real MP3: a tone plus a little noise, at ``sr`` Hz with ``channels`` channels."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.repeat(x[:, None], channels, 1).astype(np.float32), sr, format="MP3")


def make_fma(root: Path, per_split: dict[str, int] | None = None, seconds: float = 3.0) -> Corpus:
    """A corpus in FMA's layout: tracks.csv (real header), genres.csv, ``AAA/AAAAAA.mp3``.

    ``per_split`` gives tracks per split for each of the 4 genre sets; track ids are sparse and
    spread over folders. Titles hold commas, quotes and newlines, as in the real file.
    """
    per_split = per_split or {"training": 4, "validation": 2, "test": 2}
    meta, audio = root / "fma_metadata", root / "fma_small"
    meta.mkdir(parents=True)
    with resources.as_file(resources.files("genretag.data") / "fma_genres.csv") as genres:
        shutil.copy(genres, meta / "genres.csv")
    rows, track_id = [], 2
    for split, count in per_split.items():
        for g, (genres, genres_all) in enumerate(GENRE_SETS):
            for _ in range(count):
                top = ["Rock", "Electronic", "Hip-Hop", ""][g]
                rows.append(
                    (
                        track_id,
                        split,
                        "small",
                        top,
                        genres,
                        genres_all,
                        f'Song {track_id}, "live"\nedit',
                    )
                )
                write_mp3(audio / fma.audio_relpath(track_id), seconds, TONES[g], seed=track_id)
                track_id += 997  # sparse ids across several AAA folders
    frame = pd.DataFrame(
        [r[1:] for r in rows],
        index=[r[0] for r in rows],
        columns=pd.MultiIndex.from_tuples(
            [("set", "split"), ("set", "subset"), ("track", "genre_top"), ("track", "genres"),
             ("track", "genres_all"), ("track", "title")]
        ),
    )  # fmt: skip
    frame[("track", "duration")] = 200
    fma.write_tracks_csv(meta / "tracks.csv", frame)
    return Corpus(meta, audio, [r[0] for r in rows])


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return make_fma(tmp_path / "fma")


TINY_MODEL = [
    "--model.channels",
    "[4, 8, 8, 8]",
    "--model.gru_hidden",
    "8",
    "--model.gru_layers",
    "1",
]


def fit_args(corpus: Corpus, root: Path, *extra: str) -> list[str]:
    """Arguments for a tiny, fast `fit` on a fixture corpus, logging under ``root``."""
    return [
        "fit",
        "--data=genretag.data.datamodules.FMADataModule",
        f"--data.meta_dir={corpus.meta_dir}",
        f"--data.audio_dir={corpus.audio_dir}",
        "--data.window_seconds=1.0",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        *TINY_MODEL,
        *extra,
    ]


def save_model(model, path: Path) -> Path:
    """A real Lightning checkpoint of ``model`` (a TaggingTask), as ``fit`` would write it."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False
    )
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path
