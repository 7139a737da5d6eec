"""What only a CUDA GPU can show: the front-end, bf16-mixed training, GPU checkpoints on CPU.

    python -m pytest -m gpu tests/test_gpu.py      # on a GPU machine (benchmarks/device_check.py)

Every test here is marked ``gpu`` and skipped where CUDA is missing (CI, laptops). Comparisons
run in true fp32 on both devices: TF32 (on by default for cuDNN convolutions, and nnAudio's STFT
is a convolution) is switched off for them, as it rounds inputs to 10 mantissa bits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from genretag.features import LogMel
from genretag.network import Network
from genretag.task import TaggingTask

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DB_PER_NEPER = 10 * math.log10(math.e)  # the front-end gives ln(power): dB = 4.343 x value
LABELS = ["Rock", "Electronic", "Hip-Hop", "Folk"]
SR = 16_000
SMALL = {"channels": (16, 32, 32, 32), "gru_hidden": 32, "gru_layers": 1}  # configs/demo.yaml


@pytest.fixture
def true_fp32():
    """No TF32 in matmuls and convolutions while the test runs (restored after)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class RandomClips(Dataset):
    """``count`` items of white noise (seconds at 16 kHz) with random multi-hot targets."""

    def __init__(self, count: int, seconds: float) -> None:
        generator = torch.Generator().manual_seed(0)
        self.audio = 0.1 * torch.randn(count, round(seconds * SR), generator=generator)
        self.target = (torch.rand(count, len(LABELS), generator=generator) < 0.3).float()

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.audio[i], "target": self.target[i], "key": str(i)}


def test_frontend_on_cuda_equals_cpu(true_fp32):
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(8, 10 * SR)  # 8 x 10 s of white noise: every mel band has energy
    frontend = LogMel().eval()
    with torch.no_grad():
        cpu = frontend(audio)
        cuda = frontend.cuda()(audio.cuda()).cpu()
    assert cuda.shape == cpu.shape == (8, 96, 10 * SR // 256 + 1)
    worst_db = (cuda - cpu).abs().max().item() * DB_PER_NEPER
    assert worst_db < 1e-4, f"CUDA and CPU log-mels differ by up to {worst_db:.2e} dB"


def test_bf16_mixed_training_keeps_frontend_fp32(tmp_path: Path):
    torch.manual_seed(0)
    model = TaggingTask(labels=LABELS, window_seconds=2.0, **SMALL)
    dtypes: dict[str, set[torch.dtype]] = {"frontend": set(), "conv": set()}
    model.frontend.register_forward_hook(lambda m, i, out: dtypes["frontend"].add(out.dtype))
    first_conv = next(m for m in model.trunk.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, out: dtypes["conv"].add(out.dtype))
    losses: list[float] = []

    class Losses(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=3, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[Losses()], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, DataLoader(RandomClips(16, 2.0), batch_size=4))
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    assert dtypes["frontend"] == {torch.float32}, dtypes
    assert dtypes["conv"] == {torch.bfloat16}, dtypes  # autocast was on for the trunk


def test_checkpoint_saved_on_gpu_loads_on_cpu(tmp_path: Path, true_fp32):
    torch.manual_seed(0)
    model = TaggingTask(labels=LABELS, window_seconds=2.0, **SMALL)
    trainer = pl.Trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, DataLoader(RandomClips(8, 2.0), batch_size=4))
    path = tmp_path / "gpu.ckpt"
    trainer.save_checkpoint(path)
    audio = RandomClips(6, 2.0).audio
    gpu_model = model.cuda().eval()
    assert next(gpu_model.parameters()).dtype == torch.float32  # bf16-mixed keeps fp32 weights
    with torch.no_grad():
        on_gpu = gpu_model.probabilities(gpu_model(audio.cuda())).cpu()
        cpu_model = Network.load(str(path), "cpu")
        on_cpu = cpu_model.probabilities(cpu_model(audio))
    assert next(cpu_model.parameters()).device.type == "cpu"
    assert cpu_model.labels == LABELS
    torch.testing.assert_close(on_cpu, on_gpu, atol=1e-4, rtol=0)
