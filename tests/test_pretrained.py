"""musicnn's published weights in genretag: the port computes what musicnn's own code computed.

tests/data/musicnn_reference.npz holds musicnn's log-mel patches and per-patch outputs for the
clips of genretag/pretrained/clips.py, made by benchmarks/musicnn_reference.py with TensorFlow,
for the four published models: MSD_musicnn, MTT_musicnn, MSD_vgg, MTT_vgg.
The weights come from the installed musicnn package (CI: pip install --no-deps musicnn==0.1.0).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from genretag.checkpoint import load_checkpoint
from genretag.cli import main
from genretag.errors import ConfigError
from genretag.features import MusicnnMel, mel_filters
from genretag.pretrained import musicnn
from genretag.pretrained.clips import PATCH, reference_clips
from genretag.pretrained.tfbundle import read_bundle
from genretag.vocabulary import GenreMap

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"
MODELS = {"MSD_musicnn": "msd", "MTT_musicnn": "mtt", "MSD_vgg": "msd-vgg", "MTT_vgg": "mtt-vgg"}
needs_musicnn = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None,
    reason="musicnn is not installed (pip install --no-deps musicnn==0.1.0)",
)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE, allow_pickle=False) as data:
        return dict(data)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    if importlib.util.find_spec("musicnn") is None:
        pytest.skip("musicnn is not installed (pip install --no-deps musicnn==0.1.0)")
    folder = tmp_path_factory.mktemp("ckpt")
    out = {}
    for model, name in MODELS.items():
        out[model] = folder / f"{name}.ckpt"
        assert main(["pretrained", f"musicnn-{name}", "--out", str(out[model])]) == 0
    return out


def _model(path: Path):
    from genretag.network import Network  # the one loader

    return Network.load(path)


@pytest.mark.parametrize("model", MODELS)
def test_port_equals_musicnn_from_its_logmel(checkpoints, reference, model) -> None:
    net = _model(checkpoints[model])
    for clip in reference_clips():
        patches = torch.from_numpy(reference[f"logmel/{clip}"]).transpose(1, 2)  # (P, 96, 187)
        with torch.no_grad():
            features = net.trunk(patches)
            probs = net.head.probabilities(net.head(features)).numpy()
        assert np.abs(probs - reference[f"{model}/probs/{clip}"]).max() < 1e-4, clip
        assert np.abs(features.numpy() - reference[f"{model}/penultimate/{clip}"]).max() < 1e-3


@pytest.mark.parametrize("model", MODELS)
def test_port_equals_musicnn_from_the_audio(checkpoints, reference, model) -> None:
    """Our front-end on the whole clip, cut into musicnn's patches; and the first window through
    the model's forward (the path tag uses), which is musicnn's first patch."""
    net = _model(checkpoints[model])
    for clip, audio in reference_clips().items():
        assert np.isclose(np.abs(audio.astype(np.float64)).sum(), reference[f"audio_sum/{clip}"])
        expected = reference[f"{model}/probs/{clip}"]
        n = len(expected)
        with torch.no_grad():
            mel = net.frontend(torch.from_numpy(audio)[None])[0, :, : n * 187]  # (96, n*187)
            patches = mel.reshape(96, n, 187).permute(1, 0, 2)
            probs = net.head.probabilities(net.head(net.trunk(patches))).numpy()
            first = net.head.probabilities(net(torch.from_numpy(audio[None, :PATCH]))).numpy()
        assert np.abs(probs - expected).max() < 1e-3, clip
        assert np.abs(first[0] - expected[0]).max() < 1e-3, clip


def test_musicnn_mel_is_musicnns_logmel(reference) -> None:
    clips = reference_clips()
    for clip, audio in clips.items():
        theirs = reference[f"logmel/{clip}"]  # (P, 187, 96)
        with torch.no_grad():
            ours = MusicnnMel()(torch.from_numpy(audio)[None])[0].T.numpy()
        ours = ours[: theirs.size // 96].reshape(theirs.shape)
        # musicnn rounds the mel to float16 too; one float16 step is at most 3.5e-4 after log10
        assert np.abs(ours - theirs).max() < 5e-4, clip
    assert json.loads(str(reference["info"]))["stft_pad"] == "reflect"


def test_mel_filters_equal_librosas() -> None:
    librosa = pytest.importorskip("librosa")
    for sr, n_fft, n_mels, fmin, fmax in [
        (16000, 512, 96, 0.0, None),
        (22050, 2048, 128, 30.0, 9000.0),
    ]:
        theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        np.testing.assert_array_equal(mel_filters(sr, n_fft, n_mels, fmin, fmax), theirs)


@needs_musicnn
def test_labels_are_the_packages() -> None:
    tree = ast.parse((musicnn.package_folder() / "configuration.py").read_text())
    values = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert values["MSD_LABELS"] == musicnn.MSD_LABELS
    assert values["MTT_LABELS"] == musicnn.MTT_LABELS


@needs_musicnn
@pytest.mark.parametrize("damage", ["data", "index"])
def test_truncated_bundle_is_one_line_naming_the_file(tmp_path, damage) -> None:
    folder = tmp_path / "MSD_musicnn"
    shutil.copytree(musicnn.package_folder() / "MSD_musicnn", folder)
    victim = folder / (".data-00000-of-00001" if damage == "data" else ".index")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(ConfigError) as error:
        read_bundle(f"{folder}/", musicnn.tf_names())
    assert "\n" not in str(error.value) and str(victim) in str(error.value)


def test_checkpoint_is_data_and_its_card_names_source_license_scores(checkpoints) -> None:
    checkpoint = load_checkpoint(checkpoints["MSD_musicnn"])  # weights_only: plain data
    hp, card = checkpoint["hyper_parameters"], checkpoint["model_card"]
    assert hp["frontend"] == "musicnn" and round(hp["window_seconds"] * 16000) == PATCH
    assert "musicnn 0.1.0" in card["source"] and "ISC" in card["license"]
    assert "CC BY-NC-SA" in card["license"]
    assert card["metrics"] == {"test/roc_auc": 0.8802, "test/pr_auc": 0.2891}
    vgg = load_checkpoint(checkpoints["MTT_vgg"])
    assert vgg["hyper_parameters"]["trunk"]["class_path"].endswith("musicnn_vgg.MusicnnVGG")
    assert vgg["hyper_parameters"]["frontend"] == "musicnn"
    assert "MTT_vgg" in vgg["model_card"]["source"]
    assert vgg["model_card"]["metrics"] == {"test/roc_auc": 0.903, "test/pr_auc": 0.3823}


@pytest.mark.parametrize(
    ("spec", "key"),
    [("musicnn-msd-vgg", "msd-vgg"), ("musicnn:MSD_vgg", "msd-vgg"), ("MTT_vgg", "mtt-vgg"),
     ("musicnn:MSD", "msd"), ("musicnn-mtt", "mtt"), ("MSD_musicnn", "msd")],
)  # fmt: skip
def test_model_names(spec, key) -> None:
    assert musicnn.model_name(spec) == key
    assert musicnn.is_published(spec) == spec.startswith("musicnn")


def test_tag_with_the_vgg_name_gives_musicnns_scores(reference, tmp_path, monkeypatch) -> None:
    """``tag --ckpt musicnn-msd-vgg`` on a file of one window: converted into the cache, its
    scores are musicnn's for that patch (in fp32: bf16, auto on AMX CPUs, moves them ~7e-3). (A later window's first frame differs: tag pads each
    window's STFT, musicnn's patches see the samples before; benchmarks/musicnn_vs_genretag.py.)"""
    if importlib.util.find_spec("musicnn") is None:
        pytest.skip("musicnn is not installed (pip install --no-deps musicnn==0.1.0)")
    audio = tmp_path / "music" / "pad.wav"
    audio.parent.mkdir()
    sf.write(audio, reference_clips()["slow_pad"][:PATCH], 16000, subtype="FLOAT")
    monkeypatch.setenv("GENRETAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(audio.parent), "--out", str(out), "--workers", "0", "--top-k", "50",
                 "--ckpt", "musicnn-msd-vgg", "--precision", "fp32"]) == 0  # fmt: skip
    assert [p.name for p in (tmp_path / "cache").glob("*.ckpt")] == [
        f"musicnn-msd-vgg-{musicnn.package_version()}.ckpt"
    ]
    scores = json.loads(out.read_text().splitlines()[-1])["scores"]
    ours = np.array([scores[label] for label in musicnn.MSD_LABELS])
    assert np.abs(ours - reference["MSD_vgg/probs/slow_pad"][0]).max() < 1e-4  # rounded to 1e-5


def test_tag_writes_genres_of_the_default_map(checkpoints, tmp_path, monkeypatch) -> None:
    audio = tmp_path / "music" / "song.wav"
    audio.parent.mkdir()
    sf.write(audio, reference_clips()["chord_drums"], 16000)
    monkeypatch.setenv("GENRETAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tags.jsonl"
    # --ckpt musicnn-msd converts into the cache once; the file made by `pretrained` is the same
    args = ["tag", str(audio.parent), "--out", str(out), "--workers", "0", "--top-k", "50"]
    assert main([*args, "--ckpt", "musicnn-msd"]) == 0
    cached = list((tmp_path / "cache").glob("musicnn-msd-*.ckpt"))
    assert len(cached) == 1
    row = json.loads(out.read_text().splitlines()[-1])
    names = {g["label"] for g in row["genres"]}
    default = GenreMap.from_data(musicnn.genre_map("msd"), musicnn.MSD_LABELS, "default")
    allowed = {default.name(label) for label in musicnn.MSD_LABELS} - {None}
    assert names and names <= allowed and "80s" not in names and "female vocalists" not in names
    scores = np.array(list(row["scores"].values()))
    assert len(scores) == 50 and ((scores >= 0) & (scores <= 1)).all()
    mtime = cached[0].stat().st_mtime_ns
    out2 = tmp_path / "tags2.jsonl"
    again = ["tag", str(audio.parent), "--out", str(out2), "--workers", "0", "--top-k", "50"]
    assert main([*again, "--ckpt", str(checkpoints["MSD_musicnn"])]) == 0
    assert json.loads(out2.read_text().splitlines()[-1])["scores"] == row["scores"]
    assert main([*args, "--ckpt", "musicnn:MSD"]) == 0 and cached[0].stat().st_mtime_ns == mtime


@pytest.mark.parametrize("name", ["msd", "mtt", "msd-vgg", "mtt-vgg"])
def test_shipped_maps_name_only_labels(name) -> None:
    labels = musicnn.MODELS[name][1]
    for path in musicnn.MAPS.glob(f"musicnn_{name[:3]}*.yaml"):
        genre_map = GenreMap.load(path, labels)
        assert genre_map.name("80s" if name == "msd" else "male vocal") is None
    default = GenreMap.from_data(musicnn.genre_map(name), labels, "default")
    msd = name.startswith("msd")
    assert default.name("rnb" if msd else "classic") == ("R&B" if msd else "Classical")


def test_unknown_model_is_one_line() -> None:
    assert main(["pretrained", "musicnn-gtzan", "--out", "x.ckpt"]) == 2
    with pytest.raises(ConfigError, match="musicnn-msd"):
        musicnn.model_name("musicnn:gtzan")
    assert musicnn.resolve_checkpoint("some/best.ckpt") == "some/best.ckpt"


@pytest.mark.slow  # 38 s on the shared 2-core machine (load 9): a real fit
def test_fit_from_musicnn_keeps_a_frozen_trunk_and_trains_a_new_head(checkpoints, tmp_path) -> None:
    """``fit --model.init_from`` a converted checkpoint, trunk frozen for the run (musicnn's
    features + a new linear head for the data's labels)."""
    from tests.conftest import TINY_MODEL, fit_args, make_fma

    corpus = make_fma(tmp_path / "fma", {"training": 1, "validation": 1}, seconds=3.5)
    args = [a for a in fit_args(corpus, tmp_path / "logs") if a not in TINY_MODEL]
    args = [a for a in args if not a.startswith("--data.window_seconds")]
    overlay = Path(__file__).resolve().parents[1] / "configs" / "musicnn_transfer.yaml"
    assert main([*args[:2], "--config", str(overlay), *args[2:], "--trainer.limit_train_batches=1",
                 "--trainer.limit_val_batches=1", f"--model.init_from={checkpoints['MSD_musicnn']}",
                 "--model.freeze_trunk_epochs=100"]) == 0  # fmt: skip
    trained = load_checkpoint(next((tmp_path / "logs").rglob("*.ckpt")))
    source = load_checkpoint(checkpoints["MSD_musicnn"])["state_dict"]
    trunk = {k: v for k, v in trained["state_dict"].items() if k.startswith("trunk.")}
    assert trunk.keys() == {k for k in source if k.startswith("trunk.")}
    for key, value in trunk.items():
        assert torch.equal(value, source[key]), key  # frozen: weights and batch-norm statistics
    assert trained["state_dict"]["head.1.weight"].shape[0] == len(
        trained["hyper_parameters"]["labels"]
    )
    assert trained["hyper_parameters"]["frontend"] == "musicnn"
