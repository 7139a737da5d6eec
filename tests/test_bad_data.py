"""Training and testing on a corpus where 10% of the files are bad, decoded on worker processes.

tests/test_training.py shows a fit survives three bad training files; here the bad files are in
every split, the decoding runs on DataLoader workers, the count reaches TensorBoard, and the
metrics are shown to be those of the good files alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from genretag.cli import lightning_cli
from tests.conftest import Corpus, fit_args, make_fma

PER_SPLIT = {"training": 8, "validation": 2, "test": 2}  # x 4 genres = 48 tracks
METRICS = ("roc_auc", "pr_auc", "f1", "loss")


def damage(corpus: Corpus) -> dict[str, list[Path]]:
    """Make 5 of the 48 files bad (10%), in every split: {split: [bad paths]}."""
    tracks = pd.read_csv(corpus.meta_dir / "tracks.csv", header=[0, 1], index_col=0)
    split = tracks[("set", "split")]
    ids = {name: list(split[split == name].index) for name in PER_SPLIT}
    bad = {
        "training": [corpus.path(ids["training"][0]), corpus.path(ids["training"][5])],
        "validation": [corpus.path(ids["validation"][1]), corpus.path(ids["validation"][6])],
        "test": [corpus.path(ids["test"][2])],
    }
    corrupt, zero_length = bad["training"]
    corrupt.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 16)
    zero_length.write_bytes(b"")
    missing, tag_only = bad["validation"]
    missing.unlink()
    tag_only.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16))  # a tag, no audio
    [cut] = bad["test"]
    cut.write_bytes(cut.read_bytes()[:300])  # cut inside the first MPEG frame
    return bad


def without(corpus: Corpus, paths: list[Path], meta: Path) -> Corpus:
    """The same corpus with ``paths`` left out of tracks.csv (a copy of the metadata in ``meta``)."""
    meta.mkdir()
    (meta / "genres.csv").write_bytes((corpus.meta_dir / "genres.csv").read_bytes())
    tracks = pd.read_csv(corpus.meta_dir / "tracks.csv", header=[0, 1], index_col=0)
    gone = [int(p.stem) for p in paths]
    tracks.drop(index=gone).to_csv(meta / "tracks.csv")
    return Corpus(meta, corpus.audio_dir, [t for t in corpus.track_ids if t not in gone])


def skipped_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]


def final_scalar(log_dir: Path, tag: str) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    assert tag in events.Tags()["scalars"], f"{tag} not in {log_dir}"
    return events.Scalars(tag)[-1].value


def metrics(cli, stage: str) -> dict[str, float]:
    found = cli.trainer.callback_metrics
    return {m: float(found[f"{stage}/{m}"]) for m in METRICS}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread while two decoding workers share the cores (oversubscribed, a step of
    this tiny model takes 50x longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.usefixtures("one_thread")
def test_ten_percent_bad_files_in_every_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = make_fma(tmp_path / "fma", per_split=PER_SPLIT, seconds=2.0)
    bad = damage(corpus)
    workers = ["--data.num_workers=2", "--data.prefetch_factor=2"]  # decoding on workers

    with caplog.at_level(logging.WARNING):
        fit = lightning_cli(fit_args(corpus, tmp_path, "--trainer.max_epochs=2", *workers))
    assert fit.trainer.current_epoch == 2  # trained to the end
    assert fit.trainer.global_step == 2 * 32 // 4  # every batch stepped, bad items dropped
    messages = skipped_messages(caplog)
    for path in bad["training"] + bad["validation"]:  # over 2 epochs and the sanity check
        assert sum(str(path) in m for m in messages) == 1, f"{path} should be named once"
    assert len(messages) == 4
    # 16 optimizer steps in all: the user is told that the schedule is too short to train
    assert any("has only 16 optimizer steps" in r.getMessage() for r in caplog.records)
    log_dir = Path(fit.trainer.log_dir)
    # each stage counts its own bad files, per epoch (in the event file)
    assert final_scalar(log_dir, "val/skipped_files") == len(bad["validation"])
    assert final_scalar(log_dir, "train/skipped_files") == len(bad["training"])

    # Metrics come from the good files alone: the same as on a corpus that never had the bad ones.
    ckpt = str(next((log_dir / "checkpoints").glob("*.ckpt")))
    clean = without(corpus, bad["validation"] + bad["test"], tmp_path / "clean_meta")
    runs = {}
    for name, data in [("bad", corpus), ("clean", clean)]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for stage in ("validate", "test"):
                args = [stage, *fit_args(data, tmp_path / name)[1:], *workers, "--ckpt_path", ckpt]
                cli = lightning_cli(args)
                runs[name, stage] = metrics(cli, "val" if stage == "validate" else "test")
                runs[name, stage, "dir"] = Path(cli.trainer.log_dir)
        runs[name, "messages"] = skipped_messages(caplog)
    for stage in ("validate", "test"):  # the loss is summed batch by batch: equal up to rounding
        assert runs["bad", stage] == pytest.approx(runs["clean", stage], rel=1e-6, abs=0)
    assert runs["clean", "messages"] == []
    for path in bad["validation"] + bad["test"]:
        assert sum(str(path) in m for m in runs["bad", "messages"]) == 1
    assert final_scalar(runs["bad", "test", "dir"], "test/skipped_files") == 1.0
