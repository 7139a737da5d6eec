"""The main job through the CLI: fit from YAML, checkpoints, validate/test, bad files, bad config."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from genretag.checkpoint import read_checkpoint
from genretag.cli import lightning_cli, main
from genretag.data import fma
from genretag.network import Network
from genretag.task import TaggingTask
from tests.conftest import Corpus, fit_args, make_fma

TINY_YAML = """
seed_everything: 0
trainer:
  max_epochs: 2
  accelerator: cpu
  enable_progress_bar: false
  log_every_n_steps: 1
  default_root_dir: {root}
  callbacks:
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {{monitor: val/roc_auc, mode: max, filename: best, save_last: true}}
model:
  channels: [4, 8, 8, 8]
  gru_hidden: 8
  gru_layers: 1
  lr: 0.01
data:
  class_path: genretag.data.datamodules.FMADataModule
  init_args:
    meta_dir: {meta}
    audio_dir: {audio}
    window_seconds: 1.0
    batch_size: 4
    num_workers: 0
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Corpus, Path, dict[str, float]]:
    """One tiny fit from a YAML config, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("run")
    corpus = make_fma(root / "fma")
    config = root / "tiny.yaml"
    config.write_text(TINY_YAML.format(root=root, meta=corpus.meta_dir, audio=corpus.audio_dir))
    cli = lightning_cli(["fit", "--config", str(config)])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    return corpus, Path(cli.trainer.log_dir), metrics


def test_fit_writes_tensorboard_logs_and_checkpoints(trained):
    _, log_dir, metrics = trained
    assert {"train/loss", "val/loss", "val/roc_auc", "val/pr_auc", "val/f1"} <= set(metrics)
    assert (log_dir / "checkpoints" / "best.ckpt").is_file()
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(log_dir.glob("events.out.tfevents.*"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "val/roc_auc", "val/pr_auc", "val/f1", "lr-AdamW"} & scalars >= {
        "train/loss", "val/roc_auc", "val/pr_auc", "val/f1"}  # fmt: skip
    assert any(t.startswith("val_roc_auc_per_label/") for t in scalars)
    # what the run reports is what TensorBoard holds, and best.ckpt is the best epoch's
    logged = [e.value for e in events.Scalars("val/roc_auc")]
    assert len(logged) == 2 and logged[-1] == pytest.approx(metrics["val/roc_auc"], abs=1e-6)
    states = read_checkpoint(log_dir / "checkpoints" / "best.ckpt")["callbacks"]
    best = [v["best_model_score"] for k, v in states.items() if "ModelCheckpoint" in k]
    assert float(best[0]) == pytest.approx(max(logged), abs=1e-6)
    assert "val/log_mel" in events.Tags()["images"]
    assert any(t.startswith("val_pr_curve/") for t in events.Tags()["tensors"])


def test_checkpoint_holds_everything_a_tagger_needs(trained):
    corpus, log_dir, _ = trained
    checkpoint = read_checkpoint(log_dir / "checkpoints" / "best.ckpt")
    hparams = checkpoint["hyper_parameters"]
    labels = fma.label_tracks(corpus.meta_dir).labels
    assert hparams["labels"] == labels == ["Rock", "Electronic", "Hip-Hop"]
    assert (hparams["sample_rate"], hparams["window_seconds"], hparams["task"]) == (
        16_000,
        1.0,
        "multilabel",
    )
    assert (hparams["n_mels"], hparams["n_fft"], hparams["hop_length"]) == (96, 512, 256)
    # nnAudio's kernels are rebuilt, not stored: the checkpoint stays small
    assert not any(k.startswith("frontend.") for k in checkpoint["state_dict"])
    model = Network.load(str(log_dir / "checkpoints" / "best.ckpt"))
    audio = torch.randn(2, 16_000)
    reference = TaggingTask(**{k: v for k, v in hparams.items() if k != "_instantiator"})
    reference.load_state_dict(checkpoint["state_dict"])
    torch.testing.assert_close(model(audio), reference.eval()(audio))


def test_validate_and_test_from_the_checkpoint_agree(trained):
    corpus, log_dir, _ = trained
    best = str(log_dir / "checkpoints" / "best.ckpt")
    common = fit_args(corpus, log_dir.parent)[1:] + ["--trainer.logger=false"]
    runs = [lightning_cli(["validate", *common, "--ckpt_path", best]) for _ in range(2)]
    first, second = ({k: float(v) for k, v in r.trainer.callback_metrics.items()} for r in runs)
    assert first == second and "val/roc_auc" in first
    test = lightning_cli(["test", *common, "--ckpt_path", best])
    found = {k: float(v) for k, v in test.trainer.callback_metrics.items()}
    assert {"test/roc_auc", "test/pr_auc", "test/f1", "test/loss"} <= set(found)
    for name in ("test/roc_auc", "test/pr_auc"):  # bootstrap 95% intervals beside the value
        assert 0 < found[f"{name}_lo"] <= found[name] <= found[f"{name}_hi"] <= 1


def test_checkpoint_with_other_labels_is_refused_for_test(trained, tmp_path: Path, capsys):
    corpus, log_dir, _ = trained
    other = make_fma(tmp_path / "other", per_split={"training": 1, "validation": 1, "test": 1})
    tracks = (other.meta_dir / "tracks.csv").read_text().replace("[21]", "[10]")  # Hip-Hop -> Pop
    (other.meta_dir / "tracks.csv").write_text(tracks)
    args = fit_args(other, tmp_path)[1:] + ["--trainer.logger=false"]
    code = main(["test", *args, "--ckpt_path", str(log_dir / "checkpoints" / "best.ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "labels differ" in err and "Hip-Hop" in err and "Traceback" not in err


def test_training_survives_corrupt_empty_and_missing_files(tmp_path: Path, caplog):
    corpus = make_fma(tmp_path / "fma")
    corrupt, empty, missing = (corpus.path(t) for t in corpus.track_ids[:3])
    corrupt.write_bytes(b"ID3" + bytes(range(256)) * 8)
    empty.write_bytes(b"")
    missing.unlink()
    with caplog.at_level(logging.WARNING):
        cli = lightning_cli(fit_args(corpus, tmp_path, "--trainer.max_epochs=2"))
    assert cli.trainer.current_epoch == 2  # trained to the end
    metrics = cli.trainer.callback_metrics
    # the three are training tracks: training counts them, validation had none
    assert float(metrics["train/skipped_files"]) == 3.0
    assert float(metrics["val/skipped_files"]) == 0.0
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    for bad in (corrupt, empty, missing):
        assert sum(str(bad) in m for m in messages) == 1, f"{bad} should be named once"


def test_fit_through_main_with_a_yaml_and_print_config(tmp_path: Path, capsys):
    corpus = make_fma(tmp_path / "fma", per_split={"training": 1, "validation": 1, "test": 1})
    config = tmp_path / "c.yaml"
    config.write_text(TINY_YAML.format(root=tmp_path, meta=corpus.meta_dir, audio=corpus.audio_dir))
    assert main(["fit", "--config", str(config), "--trainer.fast_dev_run=true"]) == 0
    assert main(["fit", "--config", str(config), "--print_config"]) == 0  # an exit code, no raise
    assert "window_seconds: 1.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "message"),
    [("--data.subset=tiny", "data.subset"), ("--data.meta_dir={tmp}/nowhere", "data.meta_dir"),
     ("--data.audio_dir={tmp}/empty", "data.audio_dir: none of the"), ("--data.min_tracks=99", "data.min_tracks")],
)  # fmt: skip
def test_bad_configuration_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys, override: str, message: str
):
    corpus = make_fma(tmp_path / "fma", per_split={"training": 1, "validation": 1, "test": 1})
    (tmp_path / "empty").mkdir()
    code = main([*fit_args(corpus, tmp_path), override.format(tmp=tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
