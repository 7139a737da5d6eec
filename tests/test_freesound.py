"""FSDKaggle2018: both layouts, the validation split, missing audio, mAP@3, training in each
``verified`` mode, the Kaggle submission, transfer from a genre checkpoint (init_from), and the
validation embeddings in TensorBoard's projector. The recipe's steps: test_freesound_recipe.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from genretag.cli import main
from genretag.data import freesound
from genretag.data.datamodules import FreesoundDataModule
from genretag.errors import ConfigError
from genretag.metrics import map_at_k, multiclass_scores
from genretag.synth.freesound import synthesize
from genretag.task import TaggingTask, load_checkpoint
from tests.conftest import TINY_MODEL, fit_args, make_fma

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "freesound.yaml"
TINY = {"channels": (4, 8, 8, 8), "gru_hidden": 8, "gru_layers": 1}

# The first records of the real files, byte for byte (docs: shared/formats/fsd_*.csv).
REAL_TRAIN_CSV = """\
fname,label,manually_verified,freesound_id,license
00044347.wav,Hi-hat,0,28739,Attribution
001ca53d.wav,Saxophone,1,358827,Attribution
002d256b.wav,Trumpet,0,10897,Creative Commons 0
0033e230.wav,Glockenspiel,1,325017,Attribution
00353774.wav,Cello,1,195688,Attribution
003b91e8.wav,Cello,0,77944,Attribution
003da8e5.wav,Knock,1,164564,Creative Commons 0
0048fd00.wav,Gunshot_or_gunfire,1,274119,Creative Commons 0
004ad66f.wav,Clarinet,0,248370,Attribution
0063ab88.wav,Computer_keyboard,0,210304,Creative Commons 0
006f2f32.wav,Hi-hat,1,138726,Attribution
0075d39c.wav,Keys_jangling,0,134885,Attribution
"""
REAL_TEST_CSV = """\
fname,label,usage,freesound_id,license
00063640.wav,None,Ignored,88926,Attribution
0013a1db.wav,None,Ignored,373335,Creative Commons 0
002bb878.wav,None,Ignored,189611,Attribution
00eac343.wav,Electric_piano,Public,371494,Creative Commons 0
0422b811.wav,Burping_or_eructation,Public,178850,Creative Commons 0
046486df.wav,Computer_keyboard,Public,164658,Creative Commons 0
047bf19c.wav,Flute,Public,372414,Attribution
00326aa9.wav,Oboe,Private,355125,Attribution
0038a046.wav,Bass_drum,Private,90621,Creative Commons 0
007759c4.wav,Saxophone,Private,13406,Creative Commons 0
008afd93.wav,Saxophone,Private,358962,Attribution
"""


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic FSD-shaped corpus per layout: 41 classes x 3 training clips (2 verified),
    1 test clip each, 3 Ignored test clips in Kaggle's; 0.3-3 s WAVs and one of 30 s."""
    root = tmp_path_factory.mktemp("fsd")
    return {
        layout: synthesize(root / layout, layout, seconds=(0.3, 2.0))
        for layout in ("official", "kaggle")
    }


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of a corpus made of hard links (cheap; deleting in it leaves ``src`` alone)."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def fsd_args(root: Path, logs: Path, *extra: str, command: str = "fit") -> list[str]:
    """A tiny run of configs/freesound.yaml on a fixture corpus, logging under ``logs``."""
    return [
        command,
        "--config",
        str(CONFIG),
        f"--data.root={root}",
        "--data.window_seconds=1.0",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--data.val_fraction=0.5",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={logs}",
        *TINY_MODEL,
        *extra,
    ]


# -- metadata ----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_both_layouts_parse(corpora: dict[str, Path], layout: str) -> None:
    index = freesound.load(corpora[layout], val_fraction=0.5, seed=0)
    assert index.layout.name == layout
    assert len(freesound.CLASSES) == 41 and list(freesound.CLASSES) == sorted(freesound.CLASSES)
    assert set(index.train["label"]) == set(freesound.CLASSES)
    assert len(index.train) == 123 and int(index.train["verified"].sum()) == 82
    assert index.train["target"].dtype == np.int64
    # Ignored (unscored, label None) rows are not in the test split; Kaggle keeps them aside.
    assert len(index.test) == 41 and set(index.test["usage"]) == {"Public", "Private"}
    assert (index.test["target"] >= 0).all()
    assert len(index.unscored) == (3 if layout == "kaggle" else 0)
    # Validation: verified clips only, stratified: 1 of each class's 2 verified clips.
    val = index.train[index.train["val"]]
    assert val["verified"].all()
    assert sorted(val["label"]) == list(freesound.CLASSES)


def test_real_csv_excerpts_parse(tmp_path: Path) -> None:
    """The real files' first records, in the official layout (train) and Kaggle's (test)."""
    official, kaggle = tmp_path / "official", tmp_path / "kaggle"
    for folder in ("FSDKaggle2018.meta", "FSDKaggle2018.audio_train", "FSDKaggle2018.audio_test"):
        (official / folder).mkdir(parents=True)
    for folder in ("audio_train", "audio_test"):
        (kaggle / folder).mkdir(parents=True)
    (official / "FSDKaggle2018.meta/train_post_competition.csv").write_text(REAL_TRAIN_CSV)
    scored = "".join(line for line in REAL_TEST_CSV.splitlines(True) if "Ignored" not in line)
    (official / "FSDKaggle2018.meta/test_post_competition_scoring_clips.csv").write_text(scored)
    train = pd.read_csv(official / "FSDKaggle2018.meta/train_post_competition.csv")
    train[["fname", "label", "manually_verified"]].to_csv(kaggle / "train.csv", index=False)
    (kaggle / "test_post_competition.csv").write_text(REAL_TEST_CSV)
    silence = np.zeros(13_230, np.int16)  # 0.3 s
    for name in train["fname"]:
        for folder in (official / "FSDKaggle2018.audio_train", kaggle / "audio_train"):
            sf.write(folder / name, silence, 44_100, subtype="PCM_16")
    for name in pd.read_csv(kaggle / "test_post_competition.csv")["fname"]:
        for folder in (official / "FSDKaggle2018.audio_test", kaggle / "audio_test"):
            sf.write(folder / name, silence, 44_100, subtype="PCM_16")

    for root in (official, kaggle):
        index = freesound.load(root, val_fraction=0.5)
        assert list(index.train["verified"].astype(int)) == [0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0]
        assert index.train["label"].iloc[0] == "Hi-hat"
        assert list(index.test["fname"][:2]) == ["00eac343.wav", "0422b811.wav"]
        assert len(index.test) == 8 and "None" not in set(index.test["label"])
        assert index.test["target"].iloc[0] == freesound.CLASS_INDEX["Electric_piano"]
    assert len(freesound.load(kaggle).unscored) == 3


def test_validation_split_is_seeded_and_order_free(corpora: dict[str, Path]) -> None:
    layout = freesound.find_layout(corpora["official"])
    train = freesound.read_train(layout)
    mask = freesound.validation_mask(train, 0.5, seed=0)
    shuffled = train.sample(frac=1.0, random_state=1)
    again = freesound.validation_mask(shuffled, 0.5, seed=0)
    assert set(train["fname"][mask]) == set(shuffled["fname"][again])
    other = freesound.validation_mask(train, 0.5, seed=1)
    assert set(train["fname"][mask]) != set(train["fname"][other])
    with pytest.raises(ConfigError, match="val_fraction"):
        freesound.validation_mask(train, 0.0, seed=0)


def test_unknown_layout_names_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "FSDKaggle2018").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError) as error:
        freesound.find_layout(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    assert "FSDKaggle2018.meta/train_post_competition.csv" in message and "train.csv" in message
    assert f"did you mean --data.root {tmp_path / 'FSDKaggle2018'}" in message
    with pytest.raises(ConfigError, match="does not exist"):
        freesound.find_layout(tmp_path / "nowhere")


def test_cli_reports_a_wrong_root_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(fsd_args(tmp_path / "nowhere", tmp_path, "--trainer.fast_dev_run=true")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("genretag: error: data.root: ") and "download fsdkaggle2018" in err


def test_missing_audio_warns_or_refuses(
    corpora: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = linked_copy(corpora["kaggle"], tmp_path / "fsd")
    names = sorted(os.listdir(root / "audio_train"))
    (root / "audio_train" / names[0]).unlink()
    with caplog.at_level("WARNING"):
        index = freesound.load(root)
    assert len(index.train) == 122
    assert "1 of the 123 training clips are missing" in caplog.text
    for name in names[1:13]:  # 13 of 123 missing: a half-extracted download
        (root / "audio_train" / name).unlink()
    with pytest.raises(
        ConfigError, match=r"13 of the 123 training clips are missing from .*incomplete"
    ):
        freesound.load(root)
    assert len(freesound.load(root, max_missing=0.2).train) == 110
    shutil.rmtree(root / "audio_test")
    with pytest.raises(ConfigError, match="lacks audio_test"):
        freesound.load(root)


def test_unlabelled_kaggle_test_predicts_but_does_not_test(
    corpora: dict[str, Path], tmp_path: Path
) -> None:
    root = linked_copy(corpora["kaggle"], tmp_path / "fsd")
    (root / "test_post_competition.csv").unlink()  # the original competition download
    data = FreesoundDataModule(str(root), num_workers=0)
    data.setup("predict")
    assert len(data._clips["predict"]) == 44  # every row of sample_submission.csv
    with pytest.raises(ConfigError, match="no test labels"):
        data.setup("test")


@pytest.mark.parametrize(
    ("verified", "count", "weights"),
    [("all", 82, None), ("verified", 41, None), ("weighted", 82, {1.0, 0.5})],
)
def test_verified_modes_select_and_weight(
    corpora: dict[str, Path], verified: str, count: int, weights: set[float] | None
) -> None:
    data = FreesoundDataModule(
        str(corpora["official"]), verified=verified, val_fraction=0.5, num_workers=0
    )
    clips = data.clip_list("train")
    assert len(clips) == count and clips.targets.dtype == np.int64 and clips.targets.ndim == 1
    assert (clips.weights is None) == (weights is None)
    if weights is not None:
        assert set(clips.weights.tolist()) == weights
    assert data.task == "multiclass" and data.label_names == list(freesound.CLASSES)


# -- mAP@3 -------------------------------------------------------------------------------------
def test_map_at_3_by_hand() -> None:
    probs = torch.tensor(
        [
            [0.5, 0.2, 0.2, 0.1],  # label 2 ties with 1 and ranks after it: 3rd -> 1/3
            [0.1, 0.1, 0.1, 0.7],  # label 0 ties with 1 and 2, lowest index first: 2nd -> 1/2
            [0.4, 0.3, 0.2, 0.1],  # label 3 is not in the top 3 -> 0
            [0.1, 0.2, 0.3, 0.4],  # label 3 first -> 1
        ]
    )
    target = torch.tensor([2, 0, 3, 3])
    expected = (1 / 3 + 1 / 2 + 0 + 1) / 4  # 11/24
    assert map_at_k(probs, target, 3).item() == pytest.approx(expected)
    assert multiclass_scores(probs, target)["map3"].item() == pytest.approx(expected)
    # 41 tied classes: ranks follow class order (torch.topk alone returns ties in any order).
    flat = torch.full((3, 41), 1 / 41)
    assert map_at_k(flat, torch.tensor([0, 2, 3])).item() == pytest.approx((1 + 1 / 3 + 0) / 3)


# -- training, logging, submission, transfer -----------------------------------------------------
@pytest.mark.parametrize("verified", ["all", "verified", "weighted"])
def test_fit_fast_dev_run_each_mode(
    corpora: dict[str, Path], tmp_path: Path, verified: str
) -> None:
    args = fsd_args(
        corpora["official"], tmp_path, f"--data.verified={verified}", "--trainer.fast_dev_run=true"
    )
    assert main(args) == 0


@pytest.fixture(scope="module")
def genre_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genre (FMA, multi-label) checkpoint of TINY_MODEL size, trained for one short epoch."""
    root = tmp_path_factory.mktemp("genre")
    corpus = make_fma(root / "fma", {"training": 2, "validation": 1, "test": 1}, seconds=2.0)
    args = fit_args(corpus, root / "logs", "--trainer.limit_train_batches=2")
    assert main(args) == 0
    (path,) = (root / "logs").rglob("*.ckpt")
    return path


def _trunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("trunk.")}


@pytest.fixture(scope="module")
def transferred(corpora: dict[str, Path], genre_ckpt: Path, tmp_path_factory) -> Path:
    """configs/freesound.yaml for one epoch, started from the genre trunk, trunk frozen."""
    logs = tmp_path_factory.mktemp("fsd_logs")
    args = fsd_args(
        corpora["kaggle"],
        logs,
        f"--model.init_from={genre_ckpt}",
        "--model.freeze_trunk_epochs=1",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
    )
    assert main(args) == 0
    return logs


def test_transfer_through_cli_keeps_frozen_trunk(transferred: Path, genre_ckpt: Path) -> None:
    genre = load_checkpoint(str(genre_ckpt))
    fsd = load_checkpoint(str(next(transferred.rglob("last.ckpt"))))
    mine, theirs = _trunk(fsd["state_dict"]), _trunk(genre["state_dict"])
    assert mine.keys() == theirs.keys() and any("running_mean" in k for k in mine)
    for key, value in theirs.items():  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(mine[key], value), key
    assert fsd["state_dict"]["head.1.weight"].shape == (41, 32)
    assert fsd["hyper_parameters"]["labels"] == list(freesound.CLASSES)
    assert (transferred.rglob("best.ckpt")).__next__().is_file()


def test_metrics_logged_to_tensorboard(transferred: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = transferred.rglob("events.out.tfevents.*")
    tags = set(EventAccumulator(str(events)).Reload().Tags()["scalars"])
    assert {"val/map3", "val/accuracy", "val/roc_auc", "val/loss", "train/loss"} <= tags
    per_class = {t for t in tags if t.startswith("val_accuracy_per_label/")}
    assert len(per_class) == 41 and "val_accuracy_per_label/Hi-hat" in per_class


def test_val_embeddings_in_tensorboard_projector(transferred: Path) -> None:
    """configs/freesound.yaml's EmbeddingProjector: the best epoch's val clips, labelled."""
    (config,) = transferred.rglob("projector_config.pbtxt")
    (metadata,) = config.parent.rglob("metadata.tsv")
    labels = metadata.read_text().splitlines()
    assert len(labels) == 41 and set(labels) == set(freesound.CLASSES)  # 1 val clip per class
    (tensors,) = config.parent.rglob("tensors.tsv")
    rows = [line.split("\t") for line in tensors.read_text().splitlines()]
    assert len(rows) == 41 and {len(r) for r in rows} == {32}  # TINY_MODEL's 4 * gru_hidden


def test_predict_writes_kaggle_submission(
    transferred: Path, corpora: dict[str, Path], tmp_path: Path
) -> None:
    ckpt = next(transferred.rglob("best.ckpt"))
    args = fsd_args(corpora["kaggle"], tmp_path, f"--ckpt_path={ckpt}", command="predict")
    assert main([*args, "--data.predict_ignored=true"]) == 0
    (path,) = tmp_path.rglob("submission.csv")  # default: the run's log folder
    table = pd.read_csv(path)
    assert list(table.columns) == ["fname", "label"]
    listed = pd.read_csv(corpora["kaggle"] / "test_post_competition.csv")
    assert len(table) == 44 and set(table["fname"]) == set(listed["fname"])
    for labels in table["label"].str.split(" "):
        assert len(labels) == 3 == len(set(labels)) and set(labels) <= set(freesound.CLASSES)
    out = tmp_path / "elsewhere" / "sub.csv"
    assert main([*args, f"--trainer.callbacks.output={out}"]) == 0
    assert len(pd.read_csv(out)) == 41  # scored clips only, by default


def test_init_from_refuses_other_frontend(
    corpora: dict[str, Path], genre_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = fsd_args(
        corpora["official"],
        tmp_path,
        f"--model.init_from={genre_ckpt}",
        "--model.n_mels=64",
        "--trainer.fast_dev_run=true",
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "n_mels=96" in err and "n_mels=64" in err and "--model.n_mels" in err
    model = TaggingTask(list(freesound.CLASSES), task="multiclass", sample_rate=22_050, **TINY)
    with pytest.raises(ConfigError, match="sample_rate=16000.*--data.sample_rate"):
        model.load_trunk(str(genre_ckpt))


class _TrunkRecorder(pl.Callback):
    """Trunk state and mode at the end of each training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.training: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.training.append(pl_module.trunk.training)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({k: v.clone() for k, v in pl_module.trunk.state_dict().items()})


def test_freeze_trunk_epochs_then_unfreeze(corpora: dict[str, Path], genre_ckpt: Path) -> None:
    theirs = {k[6:]: v for k, v in _trunk(load_checkpoint(str(genre_ckpt))["state_dict"]).items()}
    model = TaggingTask(
        list(freesound.CLASSES),
        task="multiclass",
        init_from=str(genre_ckpt),
        freeze_trunk_epochs=1,
        **TINY,
    )
    assert not all(torch.equal(v, theirs[k]) for k, v in model.trunk.state_dict().items())
    head = model.head[1].weight.detach().clone()
    data = FreesoundDataModule(
        str(corpora["official"]), window_seconds=1.0, batch_size=8, val_fraction=0.5, num_workers=0
    )
    recorder = _TrunkRecorder()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(model, data)
    frozen, unfrozen = recorder.states
    assert all(torch.equal(frozen[k], v) for k, v in theirs.items())  # BatchNorm stats included
    assert not torch.equal(unfrozen["convs.0.0.weight"], theirs["convs.0.0.weight"])
    assert not torch.equal(unfrozen["input_norm.running_mean"], theirs["input_norm.running_mean"])
    assert recorder.training == [False, True]  # eval while frozen, train mode after
    assert not torch.equal(model.head[1].weight, head)  # the new head learns from the start


@pytest.mark.slow
def test_demo_config_synthesizes_and_trains(tmp_path: Path) -> None:
    config = CONFIG.with_name("freesound_demo.yaml")
    args = [
        "fit",
        "--config",
        str(config),
        f"--data.demo_root={tmp_path / 'fsd_demo'}",
        "--data.num_workers=0",
        "--trainer.fast_dev_run=true",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(args) == 0
    index = freesound.load(tmp_path / "fsd_demo", val_fraction=0.2)
    assert len(index.train) == 41 * 12 and len(index.test) == 41 * 4
