"""Front-end, trunk and metrics: shapes, precision, agreement with librosa, metric definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genretag.features import LogMel, SpecAugment
from genretag.metrics import map_at_k, multilabel_scores
from genretag.models.crnn import CRNN
from genretag.task import TaggingTask


def test_logmel_matches_librosa_with_reflect_padding():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    t = np.arange(32_000) / 16_000
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    ours = LogMel()(torch.from_numpy(x)[None])[0].numpy()
    mel = librosa.feature.melspectrogram(
        y=x, sr=16_000, n_fft=512, hop_length=256, n_mels=96, fmin=0.0, fmax=8_000.0,
        center=True, pad_mode="reflect", power=2.0, htk=False, norm="slaney",
    )  # fmt: skip
    reference = np.log(mel + 1e-6)
    assert ours.shape == reference.shape == (96, 126)
    loud = reference > np.log(1e-3)  # compare where there is energy (log of tiny values is noisy)
    assert np.abs(ours[loud] - reference[loud]).max() < 0.05


def test_frontend_stays_fp32_under_autocast_and_is_not_in_the_state_dict():
    frontend = LogMel()
    loud = torch.ones(2, 16_000) * 0.99
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spec = frontend(loud)
    assert spec.dtype == torch.float32 and torch.isfinite(spec).all()
    assert frontend.state_dict() == {}  # kernels are rebuilt from the hyper-parameters


def test_crnn_pools_over_time_for_any_length():
    trunk = CRNN(n_mels=96, channels=(4, 8, 8, 8), gru_hidden=8, gru_layers=1)
    for frames in (63, 626, 1876):
        assert trunk(torch.randn(2, 96, frames)).shape == (2, trunk.out_features)


def test_specaugment_masks_only_in_training():
    augment = SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=20)
    spec = torch.randn(4, 96, 200)
    augment.eval()
    assert torch.equal(augment(spec), spec)
    augment.train()
    changed = (augment(spec) != spec).float().mean().item()
    assert 0.0 < changed < 0.5


def test_model_outputs_logits_and_evaluation_averages_window_probabilities():
    model = TaggingTask(
        labels=["a", "b", "c"], channels=(4, 8, 8, 8), gru_hidden=8, gru_layers=1
    ).eval()
    audio = torch.randn(5, 16_000)
    with torch.no_grad():
        model.head[1].bias.fill_(3.0)
        logits = model(audio)
        batch = {"audio": audio, "clip": torch.tensor([0, 0, 1, 1, 1]), "key": ["x", "y"]}
        clips = model.clip_probabilities(batch)
    assert logits.shape == (5, 3) and (logits > 1).all()  # logits, not probabilities
    expected = torch.stack([logits[:2].sigmoid().mean(0), logits[2:].sigmoid().mean(0)])
    torch.testing.assert_close(clips, expected)


def test_macro_scores_leave_out_labels_without_positives():
    probs = torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.6, 0.5], [0.1, 0.4, 0.5], [0.3, 0.1, 0.5]])
    targets = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    scores = multilabel_scores(probs, targets)
    # label 0 is perfectly ranked (AUC 1), label 1: positives 0.2, 0.4 vs negatives 0.6, 0.1 -> 0.5
    assert scores["roc_auc"].item() == pytest.approx(0.75)
    assert torch.isnan(scores["roc_auc_per_label"][2])


def test_map_at_3_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    target = torch.tensor([0, 2, 3])  # rank 1 -> 1, rank 2 -> 1/2, not in top 3 -> 0
    assert map_at_k(probs, target).item() == pytest.approx((1 + 0.5 + 0) / 3)
