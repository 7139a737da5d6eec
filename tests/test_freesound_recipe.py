"""The Freesound recipe: folds, trusted and pseudo-labelled clips, ensembles in test/predict,
embeddings, label spreading and self-training (resumed after an interruption); crafted
checkpoints given as ensemble members or to embed are refused and run nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from genretag.cli import lightning_cli, main
from genretag.commands import selftrain
from genretag.commands.embed import main as embed_main
from genretag.commands.spreading import catch_rate, trusted_table
from genretag.data import freesound
from genretag.data.datamodules import FreesoundDataModule
from genretag.errors import ConfigError
from genretag.inference import Predictor, for_inference, load_predictor
from genretag.metrics import map_at_k
from genretag.network import Network
from genretag.synth.freesound import TRUTH_CSV, synthesize
from genretag.task import TaggingTask
from genretag.windows import windows
from tests.test_checkpoint import System, evil_checkpoint
from tests.test_freesound import TINY, fsd_args

CLASSES = list(freesound.CLASSES)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """41 classes x 6 training clips (5 verified), 1 test clip each, short 16 kHz WAVs."""
    root = tmp_path_factory.mktemp("fsd_recipe") / "corpus"
    return synthesize(
        root, train_per_class=6, verified_per_class=5, seconds=(0.3, 1.2), long_clips=0, sr=16_000
    )


def tiny_ckpt(path: Path, seed: int) -> Path:
    """A randomly initialised tiny Freesound model saved as a plain genretag checkpoint."""
    torch.manual_seed(seed)
    model = TaggingTask(CLASSES, task="multiclass", window_seconds=1.0, pad_mode="loop", **TINY)
    model.eval()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    return [tiny_ckpt(folder / f"m{i}.ckpt", i) for i in range(2)]


# -- folds ---------------------------------------------------------------------------------------
def test_folds_are_disjoint_stratified_and_cover_every_verified_clip(corpus: Path) -> None:
    train = freesound.read_train(freesound.find_layout(corpus))
    fold = freesound.fold_assignment(train, 5, seed=3)
    verified = train["verified"].to_numpy()
    assert (fold[~verified] == -1).all() and set(fold[verified]) == set(range(5))
    per_class = pd.crosstab(train["label"][verified], fold[verified])
    assert (per_class.max(axis=1) - per_class.min(axis=1) <= 1).all()  # 5 clips: 1 per fold
    sizes = np.bincount(fold[verified])
    assert sizes.max() - sizes.min() <= 1
    shuffled = train.sample(frac=1.0, random_state=0).reset_index(drop=True)
    again = dict(
        zip(shuffled["fname"], freesound.fold_assignment(shuffled, 5, seed=3), strict=True)
    )
    assert again == dict(
        zip(train["fname"], fold, strict=True)
    )  # seeded, independent of the CSV's order
    assert not np.array_equal(freesound.fold_assignment(train, 5, seed=4), fold)

    seen: list[str] = []
    for i in range(5):
        data = FreesoundDataModule(str(corpus), folds=5, fold=i, seed=3, num_workers=0)
        val, train_keys = data.clip_list("val").keys, data.clip_list("train").keys
        assert not set(val) & set(train_keys)
        assert len(val) + len(train_keys) == len(train)
        seen += val
    assert sorted(seen) == sorted(train["fname"][verified])  # each verified clip once
    with pytest.raises(ConfigError, match="data.fold: 5 must be in 0..4"):
        _ = FreesoundDataModule(str(corpus), folds=5, fold=5).index


def test_trusted_clips_count_as_verified_and_pseudo_clips_are_added(
    corpus: Path, tmp_path: Path
) -> None:
    train = freesound.read_train(freesound.find_layout(corpus))
    unverified = list(train["fname"][~train["verified"]])
    table = pd.DataFrame({"clip": unverified, "trusted": ["yes"] * 10 + ["no"] * 31})
    table.to_csv(tmp_path / "trusted.csv", index=False)
    kwargs = {"val_fraction": 0.2, "num_workers": 0}
    plain = FreesoundDataModule(str(corpus), verified="verified", **kwargs).clip_list("train")
    data = FreesoundDataModule(
        str(corpus), verified="verified", trusted=str(tmp_path / "trusted.csv"), **kwargs
    )
    assert len(data.clip_list("train")) == len(plain) + 10
    assert set(unverified[:10]) <= set(data.clip_list("train").keys)
    weighted = FreesoundDataModule(
        str(corpus), verified="weighted", trusted=str(tmp_path / "trusted.csv"), **kwargs
    ).clip_list("train")
    weight = dict(zip(weighted.keys, weighted.weights.tolist(), strict=True))
    assert {weight[k] for k in unverified[:10]} == {1.0} and weight[unverified[-1]] == 0.5

    test_wavs = sorted((corpus / "FSDKaggle2018.audio_test").iterdir())[:3]
    pseudo = pd.DataFrame({"path": map(str, test_wavs), "label": ["Bark", "Gong", "Flute"]})
    pseudo.to_csv(tmp_path / "pseudo.csv", index=False)
    data = FreesoundDataModule(
        str(corpus), pseudo=str(tmp_path / "pseudo.csv"), pseudo_weight=0.3, **kwargs
    )
    clips = data.clip_list("train")
    assert clips.paths[-3:] == [str(p) for p in test_wavs]
    assert clips.targets[-1] == freesound.CLASS_INDEX["Flute"]
    assert clips.weights[-3:].tolist() == pytest.approx([0.3] * 3) and clips.weights[0] == 1.0


# -- ensembles -----------------------------------------------------------------------------------
def test_ensemble_probabilities_are_the_hand_computed_means(ckpts: list[Path]) -> None:
    models = [for_inference(Network.load(str(p)), torch.device("cpu")) for p in ckpts]
    audio = torch.randn(5, 16_000) * 0.1
    with torch.inference_mode():
        each = torch.stack([m.head.probabilities(m(audio)) for m in models])  # (2, 5, 41)
    clip = torch.tensor([0, 0, 1, 2, 2])
    per_clip = torch.stack([each[:, [0, 1]].mean(1), each[:, 2], each[:, [3, 4]].mean(1)], 1)
    arithmetic = Predictor(models, "arithmetic").clip_probabilities(audio, clip, 3)
    assert torch.allclose(arithmetic, per_clip.mean(0), atol=1e-6)
    geometric = Predictor(models, "geometric").clip_probabilities(audio, clip, 3)
    hand = (per_clip[0] * per_clip[1]).sqrt()
    assert torch.allclose(geometric, hand / hand.sum(-1, keepdim=True), atol=1e-6)
    weighted = Predictor(models, "arithmetic", [3.0, 1.0]).clip_probabilities(audio, clip, 3)
    assert torch.allclose(weighted, 0.75 * per_clip[0] + 0.25 * per_clip[1], atol=1e-6)


@pytest.mark.parametrize(
    "combine", ["geometric", pytest.param("arithmetic", marks=pytest.mark.slow)]
)
def test_cli_test_reports_the_ensembles_metrics(
    corpus: Path, ckpts: list[Path], tmp_path: Path, combine: str
) -> None:
    members = f"--model.ensemble=[{ckpts[0]},{ckpts[1]}]"
    args = fsd_args(
        corpus, tmp_path, members, f"--model.ensemble_combine={combine}", command="test"
    )
    cli = lightning_cli(args[:])
    reported = float(cli.trainer.callback_metrics["test/map3"])
    index = freesound.load(corpus, val_fraction=0.5)
    paths = [str(index.layout.test_audio / n) for n in index.test["fname"]]
    probs = selftrain.score_clips(
        load_predictor([str(p) for p in ckpts], torch.device("cpu"), combine), paths
    )
    hand = float(map_at_k(torch.as_tensor(probs), torch.as_tensor(index.test["target"])))
    assert reported == pytest.approx(hand, abs=1e-6)
    alone = selftrain.score_clips(load_predictor([str(ckpts[0])], torch.device("cpu")), paths)
    single = float(map_at_k(torch.as_tensor(alone), torch.as_tensor(index.test["target"])))
    assert single != pytest.approx(reported)  # the members differ: the ensemble is not one


def test_crafted_member_or_embed_checkpoint_is_refused(
    corpus: Path, ckpts: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", System(marker))
    args = fsd_args(corpus, tmp_path, f"--model.ensemble=[{ckpts[0]},{evil}]", command="predict")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("genretag: error: ") and f"{evil}: refused to load" in err[-1]
    assert main(["embed", "--ckpt", str(evil), str(corpus), "--out", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{evil}: refused to load" in err[0]
    assert not marker.exists() and not (tmp_path / "e.npy").exists()


def test_ensemble_members_must_share_the_front_end(
    corpus: Path, ckpts: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    torch.manual_seed(0)
    other = TaggingTask(CLASSES, task="multiclass", window_seconds=1.0, n_mels=64, **TINY)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams)}, path)
    args = fsd_args(corpus, tmp_path, f"--model.ensemble=[{ckpts[0]},{path}]", command="test")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"model.ensemble: {path}: its front-end" in err and "must share the front-end" in err


# -- embeddings and label spreading ----------------------------------------------------------------
def test_embed_averages_the_pooled_features_of_a_clips_windows(
    corpus: Path, ckpts: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "emb.npy"
    config = Path(__file__).resolve().parents[1] / "configs" / "freesound.yaml"
    args = ["--ckpt", str(ckpts[0]), "--config", str(config), "--root", str(corpus)]
    assert embed_main([*args, "--stages", "val,test", "--out", str(out)]) == 0
    x, index = np.load(out), pd.read_csv(out.with_suffix(".csv"), keep_default_na=False)
    assert x.shape == (41 * 2, 32) and len(index) == 41 * 2  # 1 val + 1 test clip per class
    assert set(index["stage"]) == {"val", "test"}
    assert set(index["verified"][index["stage"] == "val"].astype(str)) == {"1"}
    assert set(index["label"][index["stage"] == "test"]) == set(CLASSES)
    model = Network.load(str(ckpts[0]))
    from genretag.data import audio

    longest = max(index["path"], key=lambda p: sf.info(p).frames)
    wave = audio.decode(longest, 16_000)
    cut = torch.as_tensor(windows(wave, 16_000, mode="loop"))
    assert len(cut) >= 2
    with torch.inference_mode():
        hand = model.trunk(model.frontend(cut)).mean(0).numpy()
    row = int(np.flatnonzero(index["path"] == longest)[0])
    np.testing.assert_allclose(x[row], hand, atol=1e-5)
    assert main(["embed", "--ckpt", str(ckpts[0]), str(corpus / "FSDKaggle2018.audio_test"),
                 "--out", str(tmp_path / "p.npy")]) == 0  # fmt: skip
    assert np.load(tmp_path / "p.npy").shape == (41, 32)


def test_spreading_recovers_planted_wrong_labels() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 3.0  # 4 well separated clusters in 8 dimensions
    truth = np.repeat(np.arange(4), 20)
    x = centres[truth] + 0.1 * rng.standard_normal((80, 8))
    verified = np.tile(np.arange(20) < 8, 4)  # 8 verified clips per cluster
    given = truth.copy()
    wrong = ~verified & (rng.random(80) < 0.3)
    given[wrong] = (truth[wrong] + 1 + rng.integers(0, 3, wrong.sum())) % 4
    names = np.array(["a", "b", "c", "d"])
    index = pd.DataFrame(
        {
            "clip": [f"c{i}" for i in range(80)],
            "label": names[given],
            "verified": verified.astype(int),
        }
    )
    table = trusted_table(index, x)
    assert (table["spread_label"] == names[truth]).all()
    assert set(table["clip"][table["trusted"] == "no"]) == set(index["clip"][wrong])
    rates = catch_rate(table, set(index["clip"][wrong]))
    assert rates["precision"] == 1.0 and rates["recall"] == 1.0 and rates["wrong"] == wrong.sum()
    assert main_spread(index, x) == set(index["clip"][wrong])


def main_spread(index: pd.DataFrame, x: np.ndarray) -> set[str]:
    """The spread-labels command on files; the clips it distrusts."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "x.npy", x.astype(np.float32))
        index.to_csv(Path(folder) / "x.csv", index=False)
        out = Path(folder) / "trusted.csv"
        assert main(["spread-labels", "--embeddings", f"{folder}/x.npy", "--out", str(out)]) == 0
        table = pd.read_csv(out)
        assert list(table.columns) == [
            "clip", "label", "spread_label", "confidence", "verified", "trusted"
        ]  # fmt: skip
        return set(table["clip"][table["trusted"] == "no"])


def test_synthetic_corpus_plants_wrong_unverified_labels(tmp_path: Path) -> None:
    root = synthesize(tmp_path, train_per_class=10, verified_per_class=4, seconds=(0.3, 0.5),
                      long_clips=0, sr=8_000, seed=5)  # fmt: skip
    train = freesound.read_train(freesound.find_layout(root))
    truth = pd.read_csv(root / TRUTH_CSV).set_index("fname").loc[train["fname"]]
    wrong = truth["wrong"].to_numpy()
    assert not wrong[train["verified"].to_numpy()].any()
    share = wrong[~train["verified"].to_numpy()].mean()
    assert 0.2 < share < 0.4  # 30 % of 246 unverified clips, seeded
    assert (truth["label"][~wrong].to_numpy() == train["label"][~wrong].to_numpy()).all()


# -- self-training ---------------------------------------------------------------------------------
def test_self_training_resumes_at_the_round_it_reached(
    corpus: Path, ckpts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = freesound.load(corpus, val_fraction=0.2)
    paths = [str(index.layout.test_audio / n) for n in index.test["fname"]]

    def make_data(pseudo: str) -> FreesoundDataModule:
        return FreesoundDataModule(
            str(corpus), window_seconds=1.0, batch_size=8, num_workers=0, val_fraction=0.2,
            pseudo=pseudo,
        )  # fmt: skip

    real, calls = selftrain.fine_tune, []

    def interrupted(ckpt, data, folder, round_, *args, **kwargs):
        calls.append((round_, ckpt))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed during round 1's fine-tuning
        return real(ckpt, data, folder, round_, *args, **kwargs)

    monkeypatch.setattr(selftrain, "fine_tune", interrupted)
    schedule = selftrain.Schedule(rounds=2, start=0.0, step=0.01, stop=0.005, epochs=1)
    limits = {"accelerator": "cpu", "limit_train_batches": 1, "limit_val_batches": 1}

    def run() -> dict:
        return selftrain.self_train(
            [str(ckpts[0])], paths, make_data, tmp_path, schedule, trainer_kwargs=limits
        )

    with pytest.raises(KeyboardInterrupt):
        run()
    state = json.loads((tmp_path / selftrain.STATE).read_text())
    assert state["round"] == 1 and len(state["history"]) == 1
    assert len(pd.read_csv(tmp_path / "round_0" / "pseudo.csv")) == 41  # threshold 0: every clip
    state = run()
    assert [c[0] for c in calls] == [0, 1, 1]  # round 0 not redone; round 1 redone whole
    assert calls[2][1] == calls[1][1] == state["history"][0]["ckpt"]  # from round 0's best
    assert [row["threshold"] for row in state["history"]] == [0.0, 0.005]  # capped at stop
    assert state["round"] == 2 and Path(state["ckpt"]).is_file()
    for r in range(2):
        assert list((tmp_path / "self_train" / f"round_{r}").glob("events.out.tfevents.*"))
    with pytest.raises(ConfigError, match="other settings"):
        selftrain.self_train([str(ckpts[1])], paths, make_data, tmp_path, schedule)
