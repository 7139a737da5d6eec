"""One model, one answer: ``tag`` scores a file exactly as ``test``/``predict`` score the clip.

``test`` and ``predict`` decode a whole clip, cut it with genretag.windows.windows and average
the window probabilities per clip (TaggingTask.clip_probabilities, in Lightning's predict loop);
``tag`` streams the file block by block through WindowCutter on decoding workers, runs the
BatchNorm-folded, channels-last model of genretag.inference.Predictor and sums across batches.
Both must give the same clip probabilities (1e-5) for every length: a clip shorter than a window
(padded the checkpoint's way), exactly one window, a little under and over three windows (FMA's
29.98 s and 30.05 s clips), and several minutes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from genretag.data.datasets import AudioFiles, ClipList, EvalClips, collate
from genretag.inference import load_predictor
from genretag.tagger.command import main as tag_main
from genretag.tagger.stream import infer
from genretag.task import load_model
from tests.conftest import write_mp3
from tests.test_tagging import save_checkpoint

LENGTHS = {"short": 0.3, "one_window": 10.0, "under_30": 29.98, "over_30": 30.05, "long": 150.0}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("parity")
    paths = []
    for i, (name, seconds) in enumerate(LENGTHS.items()):
        path = root / f"{name}.mp3"
        write_mp3(path, seconds, 220.0 * (i + 1), sr=44_100, channels=2, seed=i)
        paths.append(path)
    return paths


def evaluated(ckpt: Path, paths: list[Path]) -> np.ndarray:
    """Clip probabilities (B, C) the way ``predict`` computes them (Lightning's predict loop)."""
    model = load_model(str(ckpt))
    source = AudioFiles(model.hparams.sample_rate)
    targets = np.zeros((len(paths), len(model.labels)), np.float32)
    keys = [str(p) for p in paths]
    clip_list = ClipList([str(p) for p in paths], keys, targets)
    dataset = EvalClips(clip_list, source, model.hparams.window_seconds, model.hparams.pad_mode)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    out = trainer.predict(model, loader)
    assert [k for batch in out for k in batch["key"]] == keys
    return torch.cat([batch["probs"] for batch in out]).numpy()


@pytest.mark.parametrize(
    "task, pad_mode, window", [("multilabel", "zero", 10.0), ("multiclass", "loop", 3.0)]
)
def test_tag_scores_each_file_as_predict_does(
    clips: list[Path], tmp_path: Path, task: str, pad_mode: str, window: float
) -> None:
    labels = ["Rock", "Electronic", "Hip-Hop"] if task == "multilabel" else ["a", "b", "c", "d"]
    ckpt = save_checkpoint(
        tmp_path / "model.ckpt", labels, task=task, window=window, pad_mode=pad_mode
    )
    expected = evaluated(ckpt, clips)
    predictor = load_predictor([str(ckpt)], torch.device("cpu"))
    assert predictor.pad_mode == pad_mode  # the checkpoint's padding, not always zeros
    # two workers, small batches: a file's windows spread over batches and workers
    tagged = {
        str(r.path): r.scores
        for results in infer(clips, predictor, predictor.window, 3, workers=2)
        for r in results
    }
    for path, row in zip(clips, expected, strict=True):
        np.testing.assert_allclose(tagged[str(path)], row, atol=1e-5, rtol=0, err_msg=path.name)

    # and the command's own table, written to 5 decimals
    out = tmp_path / "tags.csv"
    args = ["--ckpt", str(ckpt), "--out", str(out), "--precision", "fp32"]  # test's arithmetic
    assert tag_main([str(p) for p in clips] + args) == 0
    table = pd.read_csv(out).set_index("path").loc[[str(p) for p in clips], labels]
    np.testing.assert_allclose(table.to_numpy(), expected, atol=1e-5 + 5e-6, rtol=0)


def test_a_padded_clip_differs_by_pad_mode(clips: list[Path], tmp_path: Path) -> None:
    """The parity above is not vacuous: the short clip's score depends on the padding."""
    labels = ["a", "b", "c"]
    scores = []
    for mode in ("zero", "loop"):
        ckpt = save_checkpoint(tmp_path / f"{mode}.ckpt", labels, window=3.0, pad_mode=mode)
        predictor = load_predictor([str(ckpt)], torch.device("cpu"))
        (result,) = next(iter(infer(clips[:1], predictor, predictor.window, 4, workers=0)))
        scores.append(result.scores)
    assert np.abs(scores[0] - scores[1]).max() > 1e-4


def test_workers_that_score_give_what_the_main_process_gives(
    clips: list[Path], tmp_path: Path
) -> None:
    """On the CPU each worker runs the model on the windows it decoded; scores, timelines and
    embeddings are those of the model run in the main process (``--workers 0``)."""
    ckpt = save_checkpoint(tmp_path / "model.ckpt", ["a", "b", "c"], window=3.0)
    predictor = load_predictor([str(ckpt)], torch.device("cpu"))
    runs = {}
    for workers in (0, 2):
        results = infer(
            clips, predictor, predictor.window, 3, workers, timeline=True, features=True
        )
        runs[workers] = {str(r.path): r for batch in results for r in batch}
    assert len(runs[2]) == len(clips)
    for path, mine in runs[2].items():
        main = runs[0][path]
        np.testing.assert_allclose(mine.scores, main.scores, atol=1e-6, rtol=0)
        np.testing.assert_allclose(mine.timeline, main.timeline, atol=1e-6, rtol=0)
        np.testing.assert_allclose(mine.embedding, main.embedding, atol=1e-6, rtol=0)
        assert mine.starts == main.starts and mine.duration == main.duration
