"""Checkpoints are data: a crafted .ckpt runs nothing (tag, init_from, --ckpt_path, export), every
checkpoint genretag writes loads as plain data, weights that do not fit are one line, and
``genretag export`` writes a small file that tags exactly like the checkpoint it came from."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import pytest
import torch

from genretag.checkpoint import ALLOWED_GLOBALS, load_checkpoint, load_weights, read_checkpoint
from genretag.cli import main
from genretag.commands.export import describe_card, export
from genretag.commands.export import main as export_main
from genretag.errors import ConfigError
from genretag.network import Network
from genretag.resume import AtomicCheckpointIO
from genretag.task import TaggingTask
from tests.conftest import TINY_MODEL, Corpus, fit_args, make_fma, write_mp3

REPO = Path(__file__).resolve().parents[1]
TINY = {"channels": (4, 8, 8, 8), "gru_hidden": 8, "gru_layers": 1}


# -- crafted files -------------------------------------------------------------------------------
class Touch:
    """Unpickled, it would create ``marker`` (pathlib.Path.touch, pickled via getattr)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class System:
    """Unpickled, it would run a shell command that creates ``marker`` (posix.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def evil_checkpoint(path: Path, payload: object) -> Path:
    """A file shaped like a genretag checkpoint whose hyper-parameters hold ``payload``."""
    hparams = {"labels": ["Rock"], "sample_rate": 16_000, "task": "multilabel", "x": payload}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path


@pytest.mark.parametrize(("kind", "needs"), [(Touch, "getattr"), (System, "posix.system")])
def test_crafted_checkpoint_is_refused_and_runs_nothing(
    tmp_path: Path, kind: type, needs: str
) -> None:
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", kind(marker))
    with pytest.raises(ConfigError) as refused:
        load_checkpoint(evil)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{evil}: refused to load")
    assert f"it needs {needs}," in message and "genretag export" in message
    assert not marker.exists()
    # The fixture is live: the full loader runs it (what genretag did before).
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(crafted checkpoint, the marker its unpickling would create)."""
    marker = tmp_path / "pwned"
    return evil_checkpoint(tmp_path / "evil.ckpt", System(marker)), marker


def test_tag_refuses_crafted_checkpoint(
    evil: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, marker = evil
    write_mp3(tmp_path / "music" / "a.mp3", 1.0, 440.0)
    out = tmp_path / "t.csv"
    assert main(["tag", str(tmp_path / "music"), "--ckpt", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refused to load: it needs posix.system" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()


def test_fit_refuses_crafted_init_from_and_ckpt_path(
    evil: tuple[Path, Path], corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, marker = evil
    run = fit_args(corpus, tmp_path / "logs", "--trainer.fast_dev_run=true")
    assert main([*run, f"--model.init_from={path}"]) == 2
    assert "refused to load: it needs posix.system" in capsys.readouterr().err
    assert main([*run, f"--ckpt_path={path}"]) == 2
    assert "refused to load: it needs posix.system" in capsys.readouterr().err
    assert not marker.exists()


def test_export_refuses_crafted_checkpoint(evil: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil
    out = tmp_path / "model.ckpt"
    assert export_main([str(path), "--out", str(out)]) == 2
    assert not marker.exists() and not out.exists()


def test_not_a_checkpoint_is_one_line_each(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, other)
    for path, words in [
        (tmp_path / "missing.ckpt", "no such checkpoint file"),
        (text, "not a readable checkpoint"),
        (other, "not a genretag checkpoint"),
    ]:
        with pytest.raises(ConfigError, match=f"^{path}: {words}[^\n]*$"):
            load_checkpoint(path)


def test_paths_in_hparams_load_and_are_written_as_strings(tmp_path: Path) -> None:
    hparams = {"labels": ["Rock"], "sample_rate": 16_000, "task": "multilabel"}
    hparams["init_from"] = Path("/runs/genre/best.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, tmp_path / "plain.ckpt")
    assert type(load_checkpoint(tmp_path / "plain.ckpt")["hyper_parameters"]["init_from"]) in (
        ALLOWED_GLOBALS
    )  # a model built from Python, saved by a plain Trainer
    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {}, "hyper_parameters": hparams}, tmp_path / "atomic.ckpt"
    )
    written = torch.load(tmp_path / "atomic.ckpt", weights_only=True)  # torch's defaults alone
    assert written["hyper_parameters"]["init_from"] == "/runs/genre/best.ckpt"
    assert isinstance(hparams["init_from"], Path)  # the caller's dict is left alone


# -- weights that do not fit ---------------------------------------------------------------------
def test_weights_that_do_not_fit_are_one_line() -> None:
    small = Network(["a", "b", "c"], **TINY)
    big = Network(["a", "b"], **{**TINY, "gru_layers": 2})
    theirs = big.state_dict()
    extra = [k for k in theirs if k not in small.state_dict()]
    assert len(extra) > 3
    with pytest.raises(ConfigError) as error:
        load_weights(small, theirs, "big.ckpt")
    message = str(error.value)
    assert "\n" not in message and message.startswith("big.ckpt: the weights do not fit")
    assert f"{len(extra)} unexpected ({', '.join(extra[:3])}, ...)" in message
    width = small.head[1].in_features
    assert "3 of another shape (label_thresholds: 2 in the file vs 3 in the model" in message
    assert f"head.1.weight: 2x{width} in the file vs 3x{width} in the model" in message
    assert extra[3] not in message and "missing" not in message
    load_weights(small, Network(["x", "y", "z"], **TINY).state_dict(), "same.ckpt")


# -- what genretag writes loads as data ----------------------------------------------------------
def _fit(corpus: Corpus, logs: Path, *extra: str, config: str = "fma_small.yaml") -> Path:
    """A one-epoch fit of ``configs/<config>`` (two checkpoint callbacks, LR monitor)."""
    args = fit_args(corpus, logs, "--trainer.limit_train_batches=2", *extra)
    assert main(["fit", "--config", str(REPO / "configs" / config), *args[1:]]) == 0
    return next(logs.rglob("checkpoints"))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints folder of a short fit of configs/fma_small.yaml at its default model size."""
    root = tmp_path_factory.mktemp("default")
    corpus = make_fma(root / "fma", {"training": 1, "validation": 1, "test": 1}, seconds=1.5)
    args = [a for a in fit_args(corpus, root / "logs") if a not in TINY_MODEL]
    args += ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    assert main(["fit", "--config", str(REPO / "configs" / "fma_small.yaml"), *args[1:]]) == 0
    return next((root / "logs").rglob("checkpoints"))


def _is_training_checkpoint(checkpoint: dict) -> bool:
    """Lightning's full state: optimizer, scheduler, loops, both ModelCheckpoints, RNG state."""
    callbacks = checkpoint["callbacks"]
    return (
        bool(checkpoint["optimizer_states"][0]["state"])
        and bool(checkpoint["lr_schedulers"])
        and bool(checkpoint["loops"])
        and "RandomState" in callbacks
        and sum(name.startswith("ModelCheckpoint") for name in callbacks) == 2
    )


def test_fma_fit_checkpoints_load_as_data(default_run: Path) -> None:
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = load_checkpoint(default_run / name)
        assert _is_training_checkpoint(checkpoint)
        assert checkpoint["hyper_parameters"]["channels"] == [64, 128, 128, 128]
        assert set(Network.load(str(default_run / name)).labels) == {
            "Electronic",
            "Hip-Hop",
            "Rock",
        }


def _fsd_args(root: Path, logs: Path, *extra: str) -> list[str]:
    """A one-epoch fit of configs/freesound.yaml, TINY_MODEL size, on a synthetic corpus."""
    return [
        "fit",
        "--config",
        str(REPO / "configs" / "freesound.yaml"),
        f"--data.root={root}",
        "--data.window_seconds=1.0",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--data.val_fraction=0.5",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={logs}",
        *TINY_MODEL,
        *extra,
    ]


@pytest.mark.slow
def test_freesound_and_transfer_checkpoints_load_as_data(tmp_path: Path) -> None:
    from genretag.data import freesound

    genre = _fit(make_fma(tmp_path / "fma", {"training": 2, "validation": 1}, 2.0), tmp_path / "g")
    fsd = freesound.synthesize(tmp_path / "fsd", "kaggle", seconds=(0.3, 2.0))
    init_from = f"--model.init_from={genre / 'best.ckpt'}"
    for logs, extra in [(tmp_path / "fsd_logs", ()), (tmp_path / "xfer_logs", (init_from,))]:
        assert main(_fsd_args(fsd, logs, *extra)) == 0
        for name in ("best.ckpt", "last.ckpt"):
            checkpoint = load_checkpoint(next(logs.rglob(name)))
            assert _is_training_checkpoint(checkpoint)
            assert checkpoint["hyper_parameters"]["task"] == "multiclass"
        out = tmp_path / f"{logs.name}.ckpt"
        export(next(logs.rglob("last.ckpt")), out)
        assert Network.load(str(out)).labels == list(freesound.CLASSES)
    xfer = load_checkpoint(next((tmp_path / "xfer_logs").rglob("last.ckpt")))
    assert xfer["hyper_parameters"]["init_from"] == str(genre / "best.ckpt")


# -- export --------------------------------------------------------------------------------------
def test_export_round_trip_and_size(default_run: Path, tmp_path: Path, capsys) -> None:
    last, out = default_run / "last.ckpt", tmp_path / "shared" / "model.ckpt"
    assert export_main([str(last), "--out", str(out)]) == 0
    assert "metrics: val/roc_auc=" in capsys.readouterr().out
    shared = read_checkpoint(out)
    assert set(shared) == {"state_dict", "hyper_parameters", "model_card"}
    assert "_instantiator" not in shared["hyper_parameters"]
    card = shared["model_card"]
    assert card["source"] == "last.ckpt" and card["data"]["subset"] == "small"
    assert set(card["metrics"]) == {"val/roc_auc"} and card["genretag_version"]
    assert os.path.getsize(last) >= 2 * os.path.getsize(out)
    audio = torch.randn(3, 16_000)
    with torch.no_grad():
        before = Network.load(str(last)).probabilities(Network.load(str(last))(audio))
        model = Network.load(str(out))
        after = model.probabilities(model(audio))
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert [p.name for p in out.parent.iterdir()] == ["model.ckpt"]  # no temporary file left
    assert "val/roc_auc=" in describe_card(shared) and "from last.ckpt" in describe_card(shared)


def test_exported_file_starts_a_transfer(default_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.ckpt"
    export(default_run / "best.ckpt", out)
    model = TaggingTask(["a", "b"], task="multiclass", init_from=str(out))
    model.load_trunk(str(out))
    mine = model.trunk.state_dict()
    theirs = load_checkpoint(default_run / "best.ckpt")["state_dict"]
    assert all(torch.equal(v, theirs[f"trunk.{k}"]) for k, v in mine.items())


def test_export_usage_errors_are_one_line(
    default_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert export_main([str(default_run / "last.ckpt")]) == 2
    assert export_main([str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "m.ckpt")]) == 2
    assert export_main([str(default_run / "last.ckpt"), "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "--out" in lines[0] and "no such checkpoint file" in lines[1]
    assert export_main(["--help"]) == 0
    assert "genretag export lightning_logs/" in capsys.readouterr().out


def test_file_whose_weights_do_not_fit_its_settings_is_one_line(tmp_path: Path) -> None:
    model = TaggingTask(["a", "b"], **{**TINY, "gru_layers": 2})
    hparams = {**dict(model.hparams), "gru_layers": 1}  # edited, or from another version
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, tmp_path / "x.ckpt")
    with pytest.raises(ConfigError, match=r"^[^\n]*x.ckpt: the weights do not fit[^\n]*$"):
        Network.load(str(tmp_path / "x.ckpt"))
