"""The LightningModule: waveform -> log-mel (on the device) -> trunk -> head -> logits.

The head (genretag.heads) is chosen once from ``task``: ``multilabel`` (genres: sigmoid outputs,
binary cross-entropy) or ``multiclass`` (Freesound: softmax, cross-entropy); it holds the loss,
the probabilities and the metrics. Evaluation scores clips through genretag.inference, the path
``tag`` uses too. Everything a tagger needs to use a checkpoint (labels, sample rate, window,
padding, front-end and trunk settings) is a hyper-parameter. Batches: genretag.data.datasets.Batch.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from genretag import constants, tensorboard
from genretag.checkpoint import load_checkpoint, load_weights
from genretag.data.datasets import Batch
from genretag.errors import ConfigError
from genretag.export import describe_card
from genretag.features import (
    FRONTEND_DEFAULTS,
    FRONTEND_KEYS,
    Frontend,
    SpecAugment,
    build_frontend,
)
from genretag.heads import Task, make_head
from genretag.inference import Combine, PadMode, clip_scores
from genretag.metrics import ClipPredictions, best_f1_thresholds, bootstrap_intervals
from genretag.models import build_trunk

log = logging.getLogger(__name__)
FEW_STEPS = 200  # optimizer steps below which configure_optimizers warns

# Hyper-parameters that must match for trunk weights to be reusable (transfer, checks).
TRUNK_KEYS = ("trunk", "channels", "gru_hidden", "gru_layers")
STAGES = ("train", "val", "test", "predict")
ENSEMBLE_KEYS = ("ensemble", "ensemble_combine", "ensemble_weights")  # not model settings


class TaggingTask(pl.LightningModule):
    def __init__(
        self,
        labels: list[str] | None = None,
        task: Task = "multilabel",
        sample_rate: int = constants.SAMPLE_RATE,
        window_seconds: float = constants.WINDOW_SECONDS,
        pad_mode: PadMode = "zero",
        n_fft: int = constants.N_FFT,
        hop_length: int = constants.HOP_LENGTH,
        n_mels: int = constants.N_MELS,
        f_min: float = constants.F_MIN,
        f_max: float | None = constants.F_MAX,
        frontend: Frontend = "logmel",
        channels: tuple[int, ...] = (64, 128, 128, 128),
        gru_hidden: int = 128,
        gru_layers: int = 2,
        trunk: dict[str, Any] | None = None,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        spec_augment: bool = True,
        mixup_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        threshold: float = 0.5,
        init_from: str | None = None,
        freeze_trunk_epochs: int = 0,
        bootstrap_draws: int = 1000,
        genre_tree: dict[str, list[str]] | None = None,
        genre_map: dict[str, Any] | None = None,
        ensemble: list[str] | None = None,
        ensemble_combine: Combine = "arithmetic",
        ensemble_weights: list[float] | None = None,
    ) -> None:
        """
        Args:
            labels: label names, one output each (linked from the data module).
            task: multilabel (sigmoid + BCE) or multiclass (softmax + cross-entropy).
            sample_rate: Hz of the waveform the model takes (linked from the data module).
            window_seconds: length of one input window (training crop, evaluation window).
            pad_mode: how a clip shorter than a window is filled (linked from the data module),
                kept so that ``tag`` pads as evaluation did.
            n_fft, hop_length, n_mels, f_min, f_max: log-mel front-end settings.
            frontend: logmel (genretag's) or musicnn (musicnn's log10(10000 mel + 1) on
                librosa's power mel; genretag.features.MusicnnMel), see build_frontend.
            channels, gru_hidden, gru_layers, dropout: CRNN trunk size.
            trunk: another trunk of genretag.models instead of the CRNN, as
                ``{"class_path": "genretag.models.fcn.FCN", "init_args": {...}}`` (kept in the
                checkpoint as plain data; only genretag.models' trunks can be named).
            lr, weight_decay: AdamW with a one-cycle schedule over the whole run.
            spec_augment: time/frequency masking of training log-mels.
            mixup_alpha: Beta(alpha, alpha) waveform mixup of training pairs; 0 disables.
            label_smoothing: for multiclass cross-entropy.
            threshold: probability above which a label counts as predicted (F1).
            init_from: a genretag checkpoint whose front-end and trunk start this model (transfer);
                the head is new. Its front-end and trunk settings must equal these.
            freeze_trunk_epochs: train only the head for this many first epochs.
            bootstrap_draws: resamples of the test tracks for the 95% intervals of the macro
                ROC-AUC and PR-AUC (``test/roc_auc_lo``/``_hi`` ...); 0 turns them off.
            genre_tree: each label's ancestors in FMA's taxonomy, root first (linked from the
                data module; ``tag --with-parents`` writes them), or None.
            genre_map: the genre map ``tag`` applies when given no --genre-map, as plain data
                ({rename, drop, keep}, genretag.vocabulary); set by importers of published
                models whose tags are not all genres (genretag.pretrained); None: no map.
            ensemble: checkpoints that ``test`` and ``predict`` score with instead of this
                model's weights, combined by genretag.inference.Predictor (as ``tag`` does);
                not saved in checkpoints.
            ensemble_combine: arithmetic or geometric mean of the members' probabilities.
            ensemble_weights: one weight per ensemble member (normalised); default equal.
        """
        super().__init__()
        if not labels:
            raise ConfigError(
                "model.labels: no labels; they come from the data module (data.label_names)"
            )
        self.save_hyperparameters(ignore=list(ENSEMBLE_KEYS))
        self.ensemble_paths, self.ensemble_combine = ensemble, ensemble_combine
        self.ensemble_weights, self._ensemble = ensemble_weights, None
        self.labels = list(labels)
        self.frontend = build_frontend(
            frontend, sample_rate, n_fft, hop_length, n_mels, f_min, f_max
        )
        self.augment = SpecAugment() if spec_augment else nn.Identity()
        self.trunk = build_trunk(
            trunk,
            n_mels,
            channels=tuple(channels),
            gru_hidden=gru_hidden,
            gru_layers=gru_layers,
            dropout=dropout,
        )
        self.head = make_head(
            task, self.trunk.out_features, len(labels), dropout, threshold, label_smoothing
        )
        self.scores = nn.ModuleDict({stage: ClipPredictions() for stage in ("val", "test")})
        # Per label, the threshold that maximised F1 on validation (``tag --threshold auto``):
        # set at each validation, so best.ckpt holds the best epoch's.
        self.register_buffer("label_thresholds", torch.full((len(labels),), float(threshold)))
        self.bad_files: dict[str, dict[str, str]] = {stage: {} for stage in STAGES}
        self._named: set[str] = set()  # files already named in a warning (once per run)
        self._transferred = False

    # -- model ---------------------------------------------------------------------------------
    def forward(self, audio: Tensor) -> Tensor:
        """Waveform (B, T) float at ``sample_rate`` -> logits (B, C)."""
        return self.head(self.trunk(self.frontend(audio)))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Logits (B, C) -> probabilities (B, C): the head's sigmoid or softmax."""
        return self.head.probabilities(logits)

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
        self._epoch_clips = getattr(self, "_epoch_clips", 0) + len(audio)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(audio))
        return loss

    # -- evaluation ----------------------------------------------------------------------------
    def clip_probabilities(self, batch: Batch) -> Tensor:
        """Window probabilities averaged per clip (B, C), as genretag.inference scores them."""
        if self._ensemble is not None:  # test/predict with --model.ensemble
            return self._ensemble.clip_probabilities(
                batch["audio"], batch.get("clip"), len(batch["key"])
            )
        probs = self.head.probabilities(self(batch["audio"]))
        clip = batch.get("clip")
        return probs if clip is None else clip_scores(probs, clip, len(batch["key"]))

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
        seconds = time.perf_counter() - getattr(self, "_epoch_start", time.perf_counter())
        if seconds > 0 and getattr(self, "_epoch_clips", 0):
            self.log(
                "train/clips_per_s", self._epoch_clips / seconds, reduce_fx="sum", sync_dist=True
            )

    def on_test_start(self) -> None:
        self._load_ensemble()

    def on_predict_start(self) -> None:
        self._load_ensemble()

    def _load_ensemble(self) -> None:
        """Load ``ensemble``'s members (as data) onto this model's device, once."""
        if not self.ensemble_paths or self._ensemble is not None:
            return
        from genretag.inference import load_predictor

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
        self._ensemble = predictor
        log.info("scoring with an ensemble of %d checkpoints (%s)", len(predictor.models),
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
        """Copy the trunk of another genretag checkpoint into this model; the head stays new."""
        from genretag.pretrained import resolve_checkpoint

        path = resolve_checkpoint(path)
        checkpoint = load_checkpoint(path)
        theirs = checkpoint["hyper_parameters"]
        # channels and gru_* size the CRNN only; another trunk is named by class path and args
        crnn_only = TRUNK_KEYS[1:] if self.hparams.trunk is not None else ()
        for key in [k for k in FRONTEND_KEYS + TRUNK_KEYS if k not in crnn_only]:
            mine, other = self.hparams[key], theirs.get(key, FRONTEND_DEFAULTS.get(key))
            if key == "channels":
                mine, other = tuple(mine), tuple(other or ())
            if key == "trunk":
                mine, other = _trunk_spec(mine), _trunk_spec(other)
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
        load_weights(
            self.trunk,
            trunk,
            path,
            hint="its trunk is not this model's; use --model.trunk/channels/gru_hidden/gru_layers "
            "as in its training",
        )
        log.info("initialised the trunk from %s (%d tensors); the head is new", path, len(trunk))

    def _freeze_or_thaw(self) -> None:
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


def _trunk_spec(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A trunk spec compared as data: the full class path, init_args {} when absent."""
    if not isinstance(spec, dict):
        return spec
    from genretag.models import trunk_class

    cls = trunk_class(str(spec.get("class_path")))
    return {
        "class_path": f"{cls.__module__}.{cls.__name__}",
        "init_args": spec.get("init_args") or {},
    }


def _short(labels: list[str], n: int = 6) -> str:
    more = f", ... ({len(labels)} in all)" if len(labels) > n else ""
    return "[" + ", ".join(map(str, labels[:n])) + more + "]"


def load_model(path: str, map_location: str | torch.device = "cpu") -> TaggingTask:
    """A trained TaggingTask from a checkpoint file alone, in eval mode (``path`` may name a
    published model, e.g. musicnn-msd: genretag.pretrained.resolve_checkpoint)."""
    from genretag.pretrained import resolve_checkpoint

    path = resolve_checkpoint(path)
    checkpoint = load_checkpoint(path)
    accepted = inspect.signature(TaggingTask.__init__).parameters
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted}
    if "pad_mode" not in hparams:  # written before the model kept it: the data modules' defaults
        hparams["pad_mode"] = "loop" if hparams["task"] == "multiclass" else "zero"
    # The transfer source (init_from) may be gone by now; the trained weights are all here.
    model = TaggingTask(**{**hparams, "init_from": None})
    state = dict(checkpoint["state_dict"])
    state.setdefault("label_thresholds", model.label_thresholds)  # written before they were kept
    load_weights(model, state, path)
    model.card = describe_card(checkpoint)
    return model.to(map_location).eval()
