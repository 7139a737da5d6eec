"""``--precision``: every precision tags a file end to end, bf16/int8 stay close to fp32, and
``auto`` picks bf16 only on CPUs with native bf16 arithmetic."""

from __future__ import annotations

import csv
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from genretag.inference import for_inference, load_predictor, pool_before_activation
from genretag.models.crnn import CRNN
from genretag.models.musicnn_crnn import MusicnnCRNN
from genretag.models.musicnn_original import MusicnnOriginal
from genretag.models.musicnn_vgg import MusicnnVGG
from genretag.system import PRECISIONS, choose_precision, inference_threads
from genretag.tagger.command import main
from genretag.task import TaggingTask

LABELS = ["Rock", "Electronic", "Hip-Hop", "Folk", "Jazz", "Pop"]
TOLERANCE = 0.02  # largest probability difference from fp32 on any window


def _signal(seconds: float, seed: int, sr: int = 16_000) -> np.ndarray:
    """Chords, a sweep and noise bursts: (T,) float32, peak about 0.7."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    x = sum(0.15 * np.sin(2 * np.pi * root * r * t) for r in (1, 1.25, 1.5))
    x += 0.1 * np.sin(2 * np.pi * (200 + 800 * t / seconds) * t)
    x += 0.2 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0.7)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = TaggingTask(
        labels=LABELS, window_seconds=1.0, channels=(8, 16, 16, 16), gru_hidden=16, gru_layers=1
    )
    with torch.no_grad():  # spread the random model's outputs away from 0.5, as training does
        for layer in model.head.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(10.0)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("ckpt") / "small.ckpt"
    trainer.save_checkpoint(path)
    return path


def save_musicnn(path: Path, labels: list[str]) -> Path:
    """A checkpoint of musicnn's published network (MusicnnOriginal) with random weights."""
    torch.manual_seed(0)
    musicnn = TaggingTask(
        labels=labels, window_seconds=2.992, frontend="musicnn", n_fft=512, hop_length=256,
        n_mels=96, f_min=0.0, f_max=8000.0,
        trunk={"class_path": "genretag.models.musicnn_original.MusicnnOriginal", "init_args": {}},
    )  # fmt: skip
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(musicnn)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_precision_stays_close_to_fp32(ckpt: Path, precision: str) -> None:
    audio = torch.from_numpy(np.stack([_signal(1.0, seed) for seed in range(8)]))
    cpu = torch.device("cpu")
    reference = load_predictor([str(ckpt)], cpu).window_probabilities(audio)[0]
    got = load_predictor([str(ckpt)], cpu, precision=precision).window_probabilities(audio)[0]
    assert got.shape == reference.shape == (8, len(LABELS))
    assert float(reference.std(0).max()) > 0.01  # the signals are told apart: not a vacuous check
    assert float((got - reference).abs().max()) <= TOLERANCE


def test_int8_quantizes_the_gru(ckpt: Path) -> None:
    from genretag.network import Network

    model = for_inference(Network.load(str(ckpt)), torch.device("cpu"), "int8")
    assert "quantized" in type(model.trunk.gru).__module__


@pytest.mark.parametrize("precision", ["auto", *PRECISIONS])
def test_tag_runs_at_each_precision(ckpt: Path, tmp_path: Path, precision: str) -> None:
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", _signal(2.5, seed=i), 16_000)
    out = tmp_path / f"tags-{precision}.csv"
    args = [str(tmp_path), "--ckpt", str(ckpt), "--out", str(out), "--quiet"]
    assert main([*args, "--precision", precision, "--workers", "0"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(Path(r["path"]).name for r in rows) == ["0.wav", "1.wav"]
    assert all(r["top1"] in LABELS for r in rows)


def test_unknown_precision_is_a_usage_error(ckpt: Path, tmp_path: Path) -> None:
    args = [str(tmp_path), "--ckpt", str(ckpt), "--out", str(tmp_path / "t.csv")]
    assert main([*args, "--precision", "fp8"]) == 2


CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize(
    ("capability", "flags", "kernels", "expected"),
    [
        ("AVX512", SAPPHIRE_RAPIDS, True, "bf16"),  # AMX
        ("AVX512", {"avx2", "avx512f", "avx512_bf16"}, True, "bf16"),  # Cooper Lake, Zen 4
        ("AVX512", {"avx2", "avx512f", "avx512bw"}, True, "fp32"),  # Skylake-X: bf16 emulated
        ("AVX2", {"avx2", "fma"}, False, "fp32"),  # no bf16 kernel: ~15x slower
        (
            "AVX2",
            SAPPHIRE_RAPIDS,
            True,
            "fp32",
        ),  # torch told to dispatch AVX2 (ATEN_CPU_CAPABILITY)
        ("AVX512", SAPPHIRE_RAPIDS, False, "fp32"),  # a torch build without oneDNN bf16
        ("DEFAULT", {"asimd", "bf16"}, False, "fp32"),  # ARM
    ],
)
def test_auto_precision_follows_the_cpu(capability, flags, kernels, expected) -> None:
    assert choose_precision(CPU, capability, flags, kernels, onnx=False) == expected
    # with ONNX Runtime installed: the CRNN as before (no faster there), musicnn's network in it
    assert choose_precision(CPU, capability, flags, kernels, CRNN(), onnx=True) == expected
    assert choose_precision(CPU, capability, flags, kernels, MusicnnOriginal(), True) == "onnx"


@pytest.mark.parametrize(
    ("trunk", "expected"),
    [
        (CRNN, "bf16"),
        (MusicnnOriginal, "fp32"),  # musicnn-msd/-mtt
        (MusicnnVGG, "fp32"),  # musicnn-msd-vgg/-mtt-vgg
        (MusicnnCRNN, "fp32"),  # musicnn's front and mid-end
    ],
)
def test_auto_keeps_musicnns_networks_in_fp32(trunk: type, expected: str) -> None:
    """On a bf16 CPU, auto runs genretag's CRNN in bf16 but musicnn's networks in fp32: their
    bf16 scores moved a top genre on 3% of real files (genretag.system.choose_precision)."""
    assert choose_precision(CPU, "AVX512", SAPPHIRE_RAPIDS, True, trunk(), onnx=False) == expected
    with_onnx = choose_precision(CPU, "AVX512", SAPPHIRE_RAPIDS, True, trunk(), onnx=True)
    assert with_onnx == ("onnx" if trunk is MusicnnOriginal else expected)


def test_load_predictor_chooses_auto_for_each_network(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--precision auto`` and ``bf16`` with a CRNN and a musicnn network, on a machine faked to
    have bf16 arithmetic: auto is bf16 (cast) for the CRNN and fp32 for musicnn, bf16 is autocast
    for musicnn, and every choice scores within TOLERANCE of fp32."""
    from genretag import system
    from genretag.inference import _Autocast, _Cast

    save_musicnn(tmp_path / "musicnn.ckpt", LABELS)
    monkeypatch.setattr(system, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    audio = torch.from_numpy(np.stack([_signal(3.0, seed) for seed in range(2)]))
    for path, auto, bf16 in ((ckpt, _Cast, _Cast), (tmp_path / "musicnn.ckpt", None, _Autocast)):
        fp32 = load_predictor([str(path)], CPU, precision="fp32").window_probabilities(audio)
        for precision, wrapper in (("auto", auto), ("bf16", bf16)):
            got = load_predictor([str(path)], CPU, precision=precision)
            trunk = got.networks[0].trunk
            assert type(trunk) is wrapper if wrapper else not isinstance(trunk, _Cast | _Autocast)
            diff = got.window_probabilities(audio) - fp32
            assert float(diff.abs().max()) <= TOLERANCE, (path.name, precision)


def test_auto_precision_on_a_gpu_is_fp32() -> None:
    assert choose_precision(torch.device("cuda"), "AVX512", SAPPHIRE_RAPIDS, True) == "fp32"


def test_auto_precision_here_reads_this_machine() -> None:
    """Unfaked, the choice is this machine's: bf16 exactly when its CPU has native bf16."""
    from genretag.system import BF16_FLAGS, cpu_flags

    native = bool(set(BF16_FLAGS) & cpu_flags()) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    native = native and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert choose_precision(CPU) == ("bf16" if native else "fp32")


@pytest.mark.parametrize("trunk", ["crnn", "fcn"])
def test_pooling_before_the_activation_changes_no_output(trunk: str) -> None:
    """ELU/ReLU then max-pool == max-pool then ELU/ReLU, bit for bit, at a quarter of the cost."""
    from genretag.models.crnn import CRNN
    from genretag.models.fcn import FCN

    torch.manual_seed(0)
    model = (CRNN(n_mels=32, channels=(8, 8)) if trunk == "crnn" else FCN(n_mels=32)).eval()
    spec = torch.randn(3, 32, 50)
    with torch.inference_mode():
        before = model(spec)
        order = [type(m).__name__ for m in pool_before_activation(model).modules()]
        after = model(spec)
    pools = [i for i, name in enumerate(order) if name == "MaxPool2d"]
    assert pools and all(order[i + 1] in ("ELU", "ReLU") for i in pools)
    assert torch.equal(before, after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_scoring_on_the_cpu_reuses_freed_memory_instead_of_faulting_it_in_again() -> None:
    """What a batch frees, the next batch reuses: no page faults (kernel time) per batch."""

    def faults(batches: int = 5) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(batches):
            activations = torch.ones(64 * 2**20 // 4)  # 64 MB, over glibc's mmap threshold
            del activations
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    plain = faults()
    with inference_threads(torch.device("cpu"), workers=0):
        faults(10)  # the heap grows to what the batches need (aligned blocks take a few)
        kept = faults()
    assert plain > 5 * 64 * 2**20 // 2**21  # each batch faulted its pages in (2 MB pages or less)
    assert kept < plain / 20
    assert faults() > kept  # glibc's defaults are back after the block
