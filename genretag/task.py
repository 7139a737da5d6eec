"""The LightningModule: trains and evaluates a :class:`genretag.network.Network`.

The task HAS a network (front-end -> trunk -> head, see genretag.network); it adds what only
training needs: SpecAugment, mixup, the optimizer and its schedule, metrics, logging, transfer
(``init_from``) and the bad-file counts. Evaluation scores clips through genretag.inference's
:class:`~genretag.inference.Predictor`, the path ``tag`` uses too. Checkpoints store the
network's state-dict keys (``trunk.*``, ``head.*``, ``label_thresholds``), so a network loads
from them without this module. Batches: genretag.data.datasets.Batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from genretag import tensorboard
from genretag.checkpoint import load_checkpoint
from genretag.data.datasets import Batch
from genretag.errors import ConfigError
from genretag.features import SpecAugment
from genretag.heads import Head
from genretag.inference import Combine, Predictor, load_predictor
from genretag.metrics import ClipPredictions, best_f1_thresholds, bootstrap_intervals
from genretag.models import frozen_modules
from genretag.network import Network

log = logging.getLogger(__name__)
FEW_STEPS = 200  # optimizer steps below which configure_optimizers warns
STAGES = ("train", "val", "test", "predict")
NETWORK_MEMBERS = frozenset({"frontend", "trunk", "head", "label_thresholds"})
ENSEMBLE_KEYS = ("ensemble", "ensemble_combine", "ensemble_weights")  # not model settings
# The task's own hyper-parameters, saved beside the network's (ensembles are not saved).
TRAINING_KEYS = (
    "lr", "weight_decay", "spec_augment", "mixup_alpha", "init_from", "freeze_trunk_epochs",
    "bootstrap_draws",
)  # fmt: skip


class TaggingTask(pl.LightningModule):
    def __init__(
        self,
        labels: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        spec_augment: bool = True,
        mixup_alpha: float = 0.0,
        init_from: str | None = None,
        freeze_trunk_epochs: int = 0,
        bootstrap_draws: int = 1000,
        ensemble: list[str] | None = None,
        ensemble_combine: Combine = "arithmetic",
        ensemble_weights: list[float] | None = None,
        **network: Any,
    ) -> None:
        """
        Args:
            labels: label names, one output each (linked from the data module).
            lr, weight_decay: AdamW with a one-cycle schedule over the whole run.
            spec_augment: time/frequency masking of training log-mels.
            mixup_alpha: Beta(alpha, alpha) waveform mixup of training pairs; 0 disables.
            init_from: a genretag checkpoint whose front-end and trunk start this model (transfer);
                the head is new. Its front-end and trunk settings must equal these, or its trunk
                class be one this trunk takes layers from (``transfers_from``, genretag.models).
            freeze_trunk_epochs: train only the head for this many first epochs (a trunk with
                ``frozen_layers`` freezes those alone: MusicnnCRNN's GRU trains throughout).
            bootstrap_draws: resamples of the test tracks for the 95% intervals of the macro
                ROC-AUC and PR-AUC (``test/roc_auc_lo``/``_hi`` ...); 0 turns them off.
            ensemble: checkpoints that ``test`` and ``predict`` score with instead of this
                model's weights, combined by genretag.inference.Predictor (as ``tag`` does);
                not saved in checkpoints.
            ensemble_combine: arithmetic or geometric mean of the members' probabilities.
            ensemble_weights: one weight per ensemble member (normalised); default equal.
            network: the network's settings (task, sample rate, window, padding, front-end,
                trunk, head), as genretag.network.Network takes them.
        """
        super().__init__()
        if not labels:
            raise ConfigError(
                "model.labels: no labels; they come from the data module (data.label_names)"
            )
        self.network = Network(labels, **network)
        # every network setting is kept, defaults too: a checkpoint is all `tag` needs
        self.save_hyperparameters(
            {**self.network.hparams, **{k: v for k, v in locals().items() if k in TRAINING_KEYS}}
        )
        self.ensemble_paths, self.ensemble_combine = ensemble, ensemble_combine
        self.ensemble_weights = ensemble_weights
        self.augment = SpecAugment() if spec_augment else nn.Identity()
        self.scores = nn.ModuleDict({stage: ClipPredictions() for stage in ("val", "test")})
        # What validation and test score with: this network, or the ensemble (_load_ensemble).
        self.scorer = Predictor([self.network])
        self.bad_files: dict[str, dict[str, str]] = {stage: {} for stage in STAGES}
        self._named: set[str] = set()  # files already named in a warning (once per run)
        self._transferred = False
        self._epoch_clips, self._epoch_start = 0, time.perf_counter()
        self._drop_trunk_grads = False
        # State dicts use the network's own keys (trunk.*, head.*, label_thresholds), so a
        # Network loads what this module saves, and files of the previous release load here.
        self.register_state_dict_post_hook(_network_keys)
        self.register_load_state_dict_pre_hook(_task_keys)

    # -- model ---------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.network.labels

    @property
    def frontend(self) -> nn.Module:
        return self.network.frontend

    @property
    def trunk(self) -> nn.Module:
        return self.network.trunk

    @property
    def head(self) -> Head:
        return self.network.head

    @property
    def label_thresholds(self) -> Tensor:
        return self.network.label_thresholds

    def forward(self, audio: Tensor) -> Tensor:
        """Waveform (B, T) float at ``sample_rate`` -> logits (B, C)."""
        return self.network(audio)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        self._note_bad_files("train", batch)
        audio, target, weight = batch["audio"], batch["target"], batch.get("weight")
        if len(audio) == 0:
            return None
        alpha = self.hparams.mixup_alpha
        if alpha > 0 and len(audio) > 1:
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(len(audio), device=audio.device)
            audio = lam * audio + (1 - lam) * audio[perm]
            soft = self.head.soft_target(target)
            target = lam * soft + (1 - lam) * soft[perm]
            if weight is not None:
                weight = lam * weight + (1 - lam) * weight[perm]
        logits = self.head(self.trunk(self.augment(self.frontend(audio))))
        loss = self.head.loss(logits, target, weight)
        self._epoch_clips += len(audio)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(audio))
        return loss

    # -- evaluation ----------------------------------------------------------------------------
    def clip_probabilities(self, batch: Batch) -> Tensor:
        """Window probabilities averaged per clip (B, C), as genretag.inference scores them."""
        return self.scorer.clip_probabilities(batch["audio"], batch.get("clip"), len(batch["key"]))

    def _eval_step(self, stage: str, batch: Batch, batch_idx: int) -> None:
        self._note_bad_files(stage, batch)
        if len(batch["key"]) == 0:
            return
        probs = self.clip_probabilities(batch)
        target = batch["target"]
        loss = self.head.eval_loss(probs, target)
        self.log(f"{stage}/loss", loss, batch_size=len(target), sync_dist=True)
        self.scores[stage].update(probs, target)
        if stage == "val" and batch_idx == 0:
            tensorboard.log_spectrograms(self, batch["audio"][:4])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """{"key": [...], "probs": (B, C)} per batch; the caller writes them out."""
        self._note_bad_files("predict", batch)
        return {"key": batch["key"], "probs": self.clip_probabilities(batch).cpu()}

    def _end_of_eval(self, stage: str) -> None:
        self._log_skipped(stage)
        probs, targets = self.scores[stage].compute()
        self.scores[stage].reset()
        if len(probs) == 0:
            return
        scores, per_label = self.head.scores(probs, targets)
        if stage == "test" and self.head.task == "multilabel" and self.hparams.bootstrap_draws:
            draws = self.hparams.bootstrap_draws
            for name, (lo, hi) in bootstrap_intervals(probs.cpu(), targets.cpu(), draws).items():
                scores[f"{name}_lo"], scores[f"{name}_hi"] = torch.tensor(lo), torch.tensor(hi)
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()})
        if stage == "val":
            self.log("hp_metric", scores[self.head.monitor])
            if self.head.task == "multilabel" and not self.trainer.sanity_checking:
                self.label_thresholds.copy_(best_f1_thresholds(probs.cpu(), targets.cpu()))
        tensorboard.log_per_label(self, stage, per_label, probs, targets)

    def on_validation_epoch_end(self) -> None:
        self._end_of_eval("val")

    def on_test_epoch_end(self) -> None:
        self._end_of_eval("test")

    def on_fit_start(self) -> None:
        if self.logger is not None:  # for `genretag compare`
            self.logger.log_hyperparams({"n_params": sum(p.numel() for p in self.parameters())})

    def on_train_start(self) -> None:
        # configure_optimizers asks for estimated_stepping_batches, which makes the first training
        # iterator before a resumed run's epoch is restored: its crops would be epoch 0's (see
        # genretag.data.datasets.EpochSampler). Drop it, so the epoch's start makes a new one.
        if self.trainer.ckpt_path is not None:
            self.trainer.fit_loop._combined_loader = None

    def on_train_epoch_start(self) -> None:
        self._epoch_clips, self._epoch_start = 0, time.perf_counter()
        self._freeze_or_thaw()

    def on_train_epoch_end(self) -> None:
        self._log_skipped("train")
        seconds = time.perf_counter() - self._epoch_start
        if seconds > 0 and self._epoch_clips:
            self.log(
                "train/clips_per_s", self._epoch_clips / seconds, reduce_fx="sum", sync_dist=True
            )

    def on_test_start(self) -> None:
        self._load_ensemble()

    def on_predict_start(self) -> None:
        self._load_ensemble()

    def _load_ensemble(self) -> None:
        """Load ``ensemble``'s members (as data) onto this model's device, once."""
        if not self.ensemble_paths or self.scorer.networks[0] is not self.network:
            return
        predictor = load_predictor(
            self.ensemble_paths,
            self.device,
            self.ensemble_combine,
            self.ensemble_weights,
            setting="model.ensemble:",
        )
        if predictor.labels != self.labels:
            raise ConfigError(
                f"model.ensemble: {self.ensemble_paths[0]}: its labels "
                f"{_short(predictor.labels)} are not the data's "
                f"{_short(self.labels)}; ensemble members must be trained on these labels"
            )
        self.scorer = predictor
        log.info("scoring with an ensemble of %d checkpoints (%s)", len(predictor.networks),
                 self.ensemble_combine)  # fmt: skip

    # -- bad files, optimisation, transfer -----------------------------------------------------
    def _note_bad_files(self, stage: str, batch: Batch) -> None:
        """Count this stage's bad files; name each bad or truncated file once per run."""
        seen = self.bad_files[stage]
        for path, reason in batch.get("bad", ()):
            seen.setdefault(path, reason)
            if path not in self._named:
                self._named.add(path)
                log.warning(
                    "skipped %s: %s (%d bad %s files so far)", path, reason, len(seen), stage
                )
        for path, got, expected in batch.get("truncated", ()):
            if path not in self._named:
                self._named.add(path)
                rate = self.hparams.sample_rate
                log.warning(
                    "truncated %s: decodes to %.2f s but its header declares %.2f s; "
                    "the audio that decodes is used",
                    path, got / rate, expected / rate,
                )  # fmt: skip

    def _log_skipped(self, stage: str) -> None:
        """``{stage}/skipped_files``: this stage's bad files in this epoch, summed over ranks."""
        count = float(len(self.bad_files[stage]))
        self.bad_files[stage] = {}
        if self.trainer.sanity_checking:
            return
        self.log(f"{stage}/skipped_files", count, reduce_fx="sum", sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if total < FEW_STEPS and self.trainer.is_global_zero:
            log.warning(
                "the learning-rate schedule has only %d optimizer steps: on a small corpus a "
                "smaller --data.batch_size or more --trainer.max_epochs trains further (README, "
                "Compare models)",
                total,
            )
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
        """Copy another genretag checkpoint's trunk, or the layers this trunk shares with it, into
        this model (genretag.network.Network.transfer_trunk); the head stays new."""
        copied = self.network.transfer_trunk(path)
        log.info("initialised %s from %s; the head is new", copied, path)

    def _freeze_or_thaw(self) -> None:
        """Freeze the trunk (or its ``frozen_layers``, genretag.models.frozen_modules) while
        ``freeze_trunk_epochs`` last, thaw it after."""
        frozen = self.current_epoch < self.hparams.freeze_trunk_epochs
        # Under DDP the gradient reducer was built for every parameter and fails on one that
        # gets no gradient, so there the trunk keeps requires_grad and its gradients are
        # dropped before each optimizer step instead (on_before_optimizer_step).
        self._drop_trunk_grads = frozen and self.trainer.world_size > 1
        for module in frozen_modules(self.trunk):
            if self.trainer.world_size == 1:
                module.requires_grad_(not frozen)
            # eval() while frozen keeps the transferred BatchNorm statistics; train() after, or
            # BatchNorm and dropout would stay in eval mode for the rest of the run.
            module.train(not frozen)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._drop_trunk_grads:
            for module in frozen_modules(self.trunk):
                for p in module.parameters():
                    p.grad = None  # AdamW skips a parameter without a gradient (no decay either)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        theirs = checkpoint.get("hyper_parameters", {}).get("labels")
        if theirs is not None and list(theirs) != self.labels:
            raise ConfigError(
                f"the checkpoint's labels differ from the data's: checkpoint {_short(theirs)} vs "
                f"data {_short(self.labels)}; use the same --data.subset/--data.labels/--data.min_tracks "
                f"as in training"
            )


def _network_keys(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """State-dict post-hook: ``network.trunk.*`` -> ``trunk.*`` (in place)."""
    inner = prefix + "network."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)


def _task_keys(module: TaggingTask, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load pre-hook: ``trunk.*`` -> ``network.trunk.*`` (in place); a checkpoint written before
    label thresholds were kept gets the model's defaults."""
    inner = prefix + "network."
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(inner)]:
        if key[len(prefix) :].split(".", 1)[0] in NETWORK_MEMBERS:
            state[inner + key[len(prefix) :]] = state.pop(key)
    state.setdefault(inner + "label_thresholds", module.label_thresholds)


def _short(labels: list[str], n: int = 6) -> str:
    more = f", ... ({len(labels)} in all)" if len(labels) > n else ""
    return "[" + ", ".join(map(str, labels[:n])) + more + "]"


def load_model(path: str) -> TaggingTask:
    """A TaggingTask that continues training from a checkpoint file alone (self-training);
    scoring needs only :meth:`genretag.network.Network.load`."""
    network = Network.load(path)
    stored = load_checkpoint(path)["hyper_parameters"]
    training = {k: v for k, v in stored.items() if k in TRAINING_KEYS}
    # The transfer source (init_from) may be gone by now; the trained weights are all here.
    model = TaggingTask(**network.hparams, **{**training, "init_from": None})
    model.network.load_state_dict(network.state_dict())
    return model
