"""The LightningModule: waveform -> log-mel (on the device) -> CRNN trunk -> head -> logits.

One class for both heads: ``task="multilabel"`` (genres: sigmoid outputs, binary cross-entropy)
and ``task="multiclass"`` (Freesound: softmax, cross-entropy). Everything a tagger needs to use
a checkpoint (labels, sample rate, window, front-end and trunk settings) is a hyper-parameter.

Batches (see genretag.data.datasets.collate): ``audio`` (N, T) windows; ``target`` (B, C) float
multi-hot or (B,) long; ``key`` (B,) ids; ``clip`` (N,) the clip of each window in evaluation
batches (window probabilities are averaged per clip); optional ``weight`` (B,) loss weights and
``bad`` [(path, reason)] for files the workers could not decode.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genretag.errors import ConfigError
from genretag.features import LogMel, SpecAugment
from genretag.metrics import ClipPredictions, multiclass_scores, multilabel_scores
from genretag.models.crnn import CRNN

log = logging.getLogger(__name__)

# Hyper-parameters that must match for trunk weights to be reusable (transfer, checks).
FRONTEND_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max")
TRUNK_KEYS = ("channels", "gru_hidden", "gru_layers")


class TaggingTask(pl.LightningModule):
    def __init__(
        self,
        labels: list[str] | None = None,
        task: Literal["multilabel", "multiclass"] = "multilabel",
        sample_rate: int = 16_000,
        window_seconds: float = 10.0,
        n_fft: int = 512,
        hop_length: int = 256,
        n_mels: int = 96,
        f_min: float = 0.0,
        f_max: float | None = 8_000.0,
        channels: tuple[int, ...] = (64, 128, 128, 128),
        gru_hidden: int = 128,
        gru_layers: int = 2,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        spec_augment: bool = True,
        mixup_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        threshold: float = 0.5,
        init_from: str | None = None,
        freeze_trunk_epochs: int = 0,
    ) -> None:
        """
        Args:
            labels: label names, one output each (linked from the data module).
            task: multilabel (sigmoid + BCE) or multiclass (softmax + cross-entropy).
            sample_rate: Hz of the waveform the model takes (linked from the data module).
            window_seconds: length of one input window (training crop, evaluation window).
            n_fft, hop_length, n_mels, f_min, f_max: log-mel front-end settings.
            channels, gru_hidden, gru_layers, dropout: CRNN trunk size.
            lr, weight_decay: AdamW with a one-cycle schedule over the whole run.
            spec_augment: time/frequency masking of training log-mels.
            mixup_alpha: Beta(alpha, alpha) waveform mixup of training pairs; 0 disables.
            label_smoothing: for multiclass cross-entropy.
            threshold: probability above which a label counts as predicted (F1).
            init_from: a genretag checkpoint whose front-end and trunk start this model (transfer);
                the head is new. Its front-end and trunk settings must equal these.
            freeze_trunk_epochs: train only the head for this many first epochs.
        """
        super().__init__()
        if not labels:
            raise ConfigError(
                "model.labels: no labels; they come from the data module (data.label_names)"
            )
        self.save_hyperparameters()
        self.labels = list(labels)
        self.frontend = LogMel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
        self.augment = SpecAugment() if spec_augment else nn.Identity()
        self.trunk = CRNN(n_mels, tuple(channels), gru_hidden, gru_layers, dropout)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.trunk.out_features, len(labels))
        )
        self.scores = nn.ModuleDict({stage: ClipPredictions() for stage in ("val", "test")})
        self.bad_files: dict[str, str] = {}
        self._transferred = False

    # -- model ---------------------------------------------------------------------------------
    def forward(self, audio: Tensor) -> Tensor:
        """Waveform (B, T) float at ``sample_rate`` -> logits (B, C)."""
        return self.head(self.trunk(self.frontend(audio)))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Logits (B, C) -> sigmoid (multilabel) or softmax (multiclass) probabilities."""
        if self.hparams.task == "multiclass":
            return logits.float().softmax(dim=-1)
        return logits.float().sigmoid()

    # -- training ------------------------------------------------------------------------------
    def _loss(self, logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        if self.hparams.task == "multiclass":
            per_clip = F.cross_entropy(
                logits.float(),
                target,
                reduction="none",
                label_smoothing=self.hparams.label_smoothing,
            )
        else:
            per_clip = F.binary_cross_entropy_with_logits(
                logits.float(), target, reduction="none"
            ).mean(1)
        if weight is None:
            return per_clip.mean()
        return (per_clip * weight).sum() / weight.sum().clamp(min=1e-8)

    def _soft_target(self, target: Tensor) -> Tensor:
        if self.hparams.task == "multiclass":
            return F.one_hot(target, len(self.labels)).float()
        return target

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self._note_bad_files(batch)
        audio, target, weight = batch["audio"], batch["target"], batch.get("weight")
        if len(audio) == 0:
            return None
        alpha = self.hparams.mixup_alpha
        if alpha > 0 and len(audio) > 1:
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(len(audio), device=audio.device)
            audio = lam * audio + (1 - lam) * audio[perm]
            target = lam * self._soft_target(target) + (1 - lam) * self._soft_target(target)[perm]
            if weight is not None:
                weight = lam * weight + (1 - lam) * weight[perm]
        logits = self.head(self.trunk(self.augment(self.frontend(audio))))
        loss = self._loss(logits, target, weight)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(audio))
        return loss

    # -- evaluation ----------------------------------------------------------------------------
    def clip_probabilities(self, batch: dict[str, Any]) -> Tensor:
        """Window probabilities averaged per clip: (B, C)."""
        probs = self.probabilities(self(batch["audio"]))
        clip = batch.get("clip")
        if clip is None:
            return probs
        sums = torch.zeros(len(batch["key"]), probs.shape[1], device=probs.device)
        sums.index_add_(0, clip, probs)
        counts = torch.bincount(clip, minlength=len(batch["key"])).clamp(min=1)
        return sums / counts.unsqueeze(1)

    def _eval_step(self, stage: str, batch: dict[str, Any], batch_idx: int) -> None:
        self._note_bad_files(batch)
        if len(batch["key"]) == 0:
            return
        probs = self.clip_probabilities(batch)
        target = batch["target"]
        if self.hparams.task == "multiclass":
            loss = F.nll_loss(probs.clamp(min=1e-7).log(), target)
        else:
            loss = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target)
        self.log(f"{stage}/loss", loss, batch_size=len(target), sync_dist=True)
        self.scores[stage].update(probs, target)
        if stage == "val" and batch_idx == 0:
            self._log_spectrograms(batch["audio"][:4])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """{"key": [...], "probs": (B, C)} per batch; the caller writes them out."""
        return {"key": batch["key"], "probs": self.clip_probabilities(batch).cpu()}

    def _end_of_eval(self, stage: str) -> None:
        probs, targets = self.scores[stage].compute()
        self.scores[stage].reset()
        if len(probs) == 0:
            return
        if self.hparams.task == "multiclass":
            scores = multiclass_scores(probs, targets)
            per_label = scores.pop("accuracy_per_class")
            per_label_name = "accuracy"
        else:
            scores = multilabel_scores(probs, targets, self.hparams.threshold)
            per_label = scores.pop("roc_auc_per_label")
            per_label_name = "roc_auc"
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()})
        self.log(f"{stage}/skipped_files", float(len(self.bad_files)))
        if stage == "val":
            self.log("hp_metric", scores["map3" if "map3" in scores else "roc_auc"])
        self._log_per_label(stage, per_label_name, per_label, probs, targets)

    def on_validation_epoch_end(self) -> None:
        self._end_of_eval("val")

    def on_test_epoch_end(self) -> None:
        self._end_of_eval("test")

    # -- TensorBoard extras --------------------------------------------------------------------
    def _tensorboard(self):
        """The SummaryWriter of the run's TensorBoardLogger (None without one, or off rank 0)."""
        from pytorch_lightning.loggers import TensorBoardLogger

        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return None
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def _log_spectrograms(self, audio: Tensor) -> None:
        writer = self._tensorboard()
        if writer is None or len(audio) == 0:
            return
        spec = self.frontend(audio).flip(1)  # low frequencies at the bottom
        lo = spec.amin(dim=(1, 2), keepdim=True)
        hi = spec.amax(dim=(1, 2), keepdim=True)
        images = ((spec - lo) / (hi - lo).clamp(min=1e-6)).unsqueeze(1)
        writer.add_images("val/log_mel", images, self.global_step)

    def _log_per_label(
        self, stage: str, name: str, values: Tensor, probs: Tensor, targets: Tensor
    ) -> None:
        writer = self._tensorboard()
        if writer is None:
            return
        step = self.global_step
        for label, value in zip(self.labels, values.tolist(), strict=True):
            if value == value:  # not NaN
                writer.add_scalar(f"{stage}_{name}_per_label/{label}", value, step)
        if self.hparams.task == "multilabel":
            for i, label in enumerate(self.labels):
                writer.add_pr_curve(
                    f"{stage}_pr_curve/{label}", targets[:, i].cpu(), probs[:, i].cpu(), step
                )

    # -- bad files, optimisation, transfer -----------------------------------------------------
    def _note_bad_files(self, batch: dict[str, Any]) -> None:
        for path, reason in batch.get("bad", ()):
            if path not in self.bad_files:
                self.bad_files[path] = reason
                log.warning(
                    "skipped %s: %s (%d bad files so far)", path, reason, len(self.bad_files)
                )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams.lr,
            total_steps=total,
            pct_start=min(0.3, 100 / total + 0.05),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.init_from and not self._transferred:
            self.load_trunk(self.hparams.init_from)
            self._transferred = True

    def load_trunk(self, path: str) -> None:
        """Copy the trunk of another genretag checkpoint into this model; the head stays new."""
        checkpoint = load_checkpoint(path)
        theirs = checkpoint["hyper_parameters"]
        for key in FRONTEND_KEYS + TRUNK_KEYS:
            mine, other = self.hparams[key], theirs.get(key)
            if key == "channels":
                mine, other = tuple(mine), tuple(other or ())
            if mine != other:
                where = "--data.sample_rate" if key == "sample_rate" else f"--model.{key}"
                raise ConfigError(
                    f"model.init_from: {path} has {key}={other!r} but this model has {key}={mine!r}; "
                    f"set {where} to {other!r} to reuse its trunk"
                )
        trunk = {
            k[len("trunk.") :]: v
            for k, v in checkpoint["state_dict"].items()
            if k.startswith("trunk.")
        }
        self.trunk.load_state_dict(trunk)
        log.info("initialised the trunk from %s (%d tensors); the head is new", path, len(trunk))

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.hparams.freeze_trunk_epochs
        # Under DDP the gradient reducer was built for every parameter and fails on one that
        # gets no gradient, so there the trunk keeps requires_grad and its gradients are
        # dropped before each optimizer step instead (on_before_optimizer_step).
        self._drop_trunk_grads = frozen and self.trainer.world_size > 1
        if self.trainer.world_size == 1:
            for p in self.trunk.parameters():
                p.requires_grad_(not frozen)
        # eval() while frozen keeps the BatchNorm statistics of the transferred trunk; train()
        # after, or BatchNorm and dropout would stay in eval mode for the rest of the run.
        self.trunk.train(not frozen)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if getattr(self, "_drop_trunk_grads", False):
            for p in self.trunk.parameters():
                p.grad = None  # AdamW skips a parameter without a gradient (no decay either)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        theirs = checkpoint.get("hyper_parameters", {}).get("labels")
        if theirs is not None and list(theirs) != self.labels:
            raise ConfigError(
                f"the checkpoint's labels differ from the data's: checkpoint {_short(theirs)} vs "
                f"data {_short(self.labels)}; use the same --data.subset/--data.labels/--data.min_tracks "
                f"as in training"
            )


def _short(labels: list[str], n: int = 6) -> str:
    more = f", ... ({len(labels)} in all)" if len(labels) > n else ""
    return "[" + ", ".join(map(str, labels[:n])) + more + "]"


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint file and check that it is a genretag checkpoint (ConfigError if not)."""
    from genretag.checkpoint import load_checkpoint as _safe

    return _safe(path)


def load_model(path: str, map_location: str | torch.device = "cpu") -> TaggingTask:
    """A trained TaggingTask from a checkpoint file alone, in eval mode."""
    checkpoint = load_checkpoint(path)
    accepted = inspect.signature(TaggingTask.__init__).parameters
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted}
    # The transfer source (init_from) may be gone by now; the trained weights are all here.
    model = TaggingTask(**{**hparams, "init_from": None})
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(map_location).eval()
