"""The LightningModule that trains a :class:`~equimol.models.potential.Potential`.

* loss: :func:`equimol.train.losses.weighted_loss` (energy per atom, forces, stress);
* optimizer: Adam (AMSGrad by default) or AdamW; scheduler: ReduceLROnPlateau on ``val_loss``,
  linear warm-up followed by cosine decay (per epoch), cosine decay over the training budget
  (:mod:`equimol.train.budget_schedule`, per step), or none;
* EMA (:mod:`equimol.train.ema`) updated after every optimizer step and swapped in for validation
  and testing; it is saved in, and restored from, every checkpoint (``checkpoint["ema"]``);
* metrics (:mod:`equimol.train.metrics`) accumulated as sums and added over DDP processes, logged
  as ``val/energy_rmse``, ``val/forces_rmse``, ... and ``val_loss`` (the loss of the whole split), and
  printed as one line per validation (:func:`equimol.train.console.validation_line`);
* stage two (``loss.stage_two``, MACE's ``--swa``): once the budget fraction ``start`` is used
  (:func:`equimol.train.budget_schedule.budget_progress`), the training loss takes the stage's term
  weights and, if given, every parameter group its learning rate (times its fine-tuning factor), held
  constant: the scheduler stops. ``val_loss`` keeps the stage-one weights, so that best checkpoints,
  the plateau schedule and early stopping compare like with like. The switch is saved in checkpoints.

**Energies.** The data module may subtract per-element references from the energy labels
(``data.element_references``); the model always predicts *total* energies (its ``e0s`` hold the
references when ``model.e0s: auto``), so the module adds the references back to the labels
(``label_references``, ``{Z: eV}``) before comparing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import lightning as L
import torch
from equimol.datasets.references import add_references, reference_table

from equimol.config_fields import build_section
from equimol.errors import EquimolInputError
from equimol.models import build_model
from equimol.models.config import ModelConfig

from .compiled_forces import CompiledForces
from .config import FinetuneConfig, LossConfig, OptimizerConfig, SchedulerConfig
from .console import validation_line
from .ema import ExponentialMovingAverage
from .finetune import freeze, load_pretrained, parameter_groups
from .losses import weighted_loss
from .metrics import ErrorMetrics
from .stage_two import stage_two_config


def _section(cls: type, values: object, name: str):
    """A config section as its dataclass: kept if it is one already (validated at load), else built and checked."""
    return values if isinstance(values, cls) else build_section(cls, values or {}, name)


class PotentialModule(L.LightningModule):
    """Train a potential; each config section is its dataclass (a mapping is accepted and checked).

    The hyperparameters saved in checkpoints are the sections as plain mappings (``dataclasses.asdict``),
    so that a checkpoint holds no pickled class and reads with ``weights_only=True``.

    Args:
        model: the resolved model config (no ``auto`` left, :meth:`ModelConfig.resolve_auto`), or its mapping;
            for :func:`equimol.models.build_model`.
        loss: the ``loss:`` section (:class:`~equimol.train.config.LossConfig`).
        optimizer: the ``optimizer:`` section (:class:`~equimol.train.config.OptimizerConfig`).
        scheduler: the ``scheduler:`` section (:class:`~equimol.train.config.SchedulerConfig`).
        label_references: ``{atomic number: eV}`` subtracted from the energy labels by the data module.
        max_epochs: length of the cosine schedule when ``scheduler.cosine_epochs`` is unset.
        finetune: the ``finetune:`` section (:class:`~equimol.train.config.FinetuneConfig`): named parts are
            frozen and pretrained parameters get ``lr * pretrained_lr_factor``.
        compile_step: train through one compiled energy-and-forces graph (``trainer.compile_step``,
            :mod:`equimol.train.compiled_forces`); validation and testing stay eager.
        init_from: ``model.init_from``: the weights start from that model file (:mod:`equimol.train.finetune`);
            a ``model`` mapping may hold it instead (as the checkpoints' hyperparameters do).
    """

    def __init__(
        self,
        model: ModelConfig | Mapping,
        loss: LossConfig | Mapping | None = None,
        optimizer: OptimizerConfig | Mapping | None = None,
        scheduler: SchedulerConfig | Mapping | None = None,
        label_references: dict | None = None,
        max_epochs: int = 100,
        finetune: FinetuneConfig | Mapping | None = None,
        compile_step: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, ModelConfig):
            model = dict(model)
            init_from = model.pop("init_from", None) or init_from
            model = ModelConfig.from_dict(model)
        self.model_config = model
        self.finetune_config = _section(FinetuneConfig, finetune, "finetune")
        self.loss_config = _section(LossConfig, loss, "loss")
        self.optimizer_config = _section(OptimizerConfig, optimizer, "optimizer")
        self.scheduler_config = _section(SchedulerConfig, scheduler, "scheduler")
        model_values = model.to_dict() if init_from is None else {**model.to_dict(), "init_from": init_from}
        self.save_hyperparameters(
            {
                "model": model_values,
                "loss": dataclasses.asdict(self.loss_config),
                "optimizer": dataclasses.asdict(self.optimizer_config),
                "scheduler": dataclasses.asdict(self.scheduler_config),
                "label_references": label_references,
                "max_epochs": max_epochs,
                "finetune": dataclasses.asdict(self.finetune_config),
                "compile_step": compile_step,
            }
        )
        self.model = build_model(self.model_config)
        self.pretrained_names: set[str] = set()
        if init_from is not None:
            self.pretrained_names = load_pretrained(self.model, init_from)
        freeze(self.model, self.finetune_config.freeze)
        stage_two = self.loss_config.stage_two
        self.stage_two = None if stage_two is None else stage_two_config(stage_two)
        self.stage_two_active = False
        self._lr_factors: list[float] = []  # each parameter group's lr over optimizer.lr (fine-tuning factors)
        self.register_buffer("reference_table", reference_table(label_references), persistent=False)
        decay = self.optimizer_config.ema_decay
        self.ema = ExponentialMovingAverage(self.model, decay) if decay is not None else None
        self._ema_backup: dict | None = None
        self._metrics: ErrorMetrics | None = None
        self._resumed_mid_epoch = False
        self.validations = 0  # validations of this process's fit (Lightning's sanity check not counted)
        self._pending_plateau_metric: torch.Tensor | None = None
        # one compiled graph per stress flag, built at the first training step that needs it
        self._compiled_forces: dict[bool, CompiledForces] | None = {} if compile_step else None

    # ----------------------------------------------------------------------------------------- energies
    def target_energy(self, batch) -> torch.Tensor:
        """``[B]`` total energies (eV): the labels plus the references the data module took off."""
        return add_references(batch.energy, batch.atomic_numbers, getattr(batch, "batch", None), self.reference_table)

    def _needs_stress(self, batch) -> bool:
        return self.training_loss_config.stress_weight > 0 or getattr(batch, "stress", None) is not None

    @property
    def training_loss_config(self) -> LossConfig:
        """The loss of the current stage (``loss:``, or its ``stage_two`` weights once that stage began)."""
        if not self.stage_two_active:
            return self.loss_config
        stage = self.stage_two
        return LossConfig(
            energy_weight=stage.energy_weight,
            forces_weight=stage.forces_weight,
            stress_weight=stage.stress_weight,
            kind=self.loss_config.kind,
            huber_delta=self.loss_config.huber_delta,
        )

    def on_train_batch_start(self, batch, batch_index: int) -> None:
        if self.stage_two is None or self.stage_two_active:
            return
        from .budget_schedule import budget_progress

        if budget_progress(self.trainer) >= self.stage_two.start:
            self._start_stage_two()

    def _start_stage_two(self) -> None:
        self.stage_two_active = True
        if self.stage_two.lr is not None:
            for optimizer in self.trainer.optimizers:
                for group, factor in zip(optimizer.param_groups, self._lr_factors):
                    group["lr"] = self.stage_two.lr * factor
        from lightning.pytorch.utilities import rank_zero_info

        stage = self.stage_two
        rank_zero_info(
            f"stage two from step {self.global_step}: loss weights energy {stage.energy_weight}, forces "
            f"{stage.forces_weight}, stress {stage.stress_weight}; learning rate {stage.lr or 'kept'}"
        )

    def lr_scheduler_step(self, scheduler, metric) -> None:
        if self.stage_two_active and self.stage_two.lr is not None:
            return  # stage two holds its learning rate
        super().lr_scheduler_step(scheduler, metric)

    def _predict(self, batch) -> dict[str, torch.Tensor]:
        return self.model(batch, compute_forces=True, compute_stress=self._needs_stress(batch))

    # ----------------------------------------------------------------------------------------- training
    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        if self._compiled_forces is None:
            prediction = self._predict(batch)
        else:
            stress = self._needs_stress(batch)
            if stress not in self._compiled_forces:
                self._compiled_forces[stress] = CompiledForces(self.model, compute_stress=stress)
            prediction = self._compiled_forces[stress](batch)
        config = self.training_loss_config
        loss, terms = weighted_loss(prediction, batch, self.target_energy(batch), config)
        size = int(batch.energy.shape[0])
        self.log("train_loss", loss.detach(), batch_size=size, prog_bar=True)
        for name, value in terms.items():
            self.log(f"train/{name}_{config.kind}", value.detach(), batch_size=size)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # The EMA is updated right after the step, inside the training step: step checkpoints
        # (written by callbacks at on_train_batch_end) then always hold an EMA that matches the weights.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)

    # ------------------------------------------------------------------------------- validation and test
    def _start_evaluation(self) -> None:
        self._metrics = ErrorMetrics()
        if self.ema is not None and self._ema_backup is None:
            self._ema_backup = self.ema.apply_to(self.model)

    def _end_evaluation(self) -> dict[str, float]:
        metrics = self._metrics
        metrics.reduce(lambda t: self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum"))
        if self.ema is not None and self._ema_backup is not None:
            self.ema.restore(self.model, self._ema_backup)
            self._ema_backup = None
        self._metrics = None
        return metrics.compute()

    def _evaluation_step(self, batch) -> None:
        with torch.enable_grad():  # forces are gradients; the Trainer runs with inference_mode=False
            prediction = self._predict(batch)
        self._metrics.update({k: v.detach() for k, v in prediction.items()}, batch, self.target_energy(batch))

    def _loss_from_metrics(self, values: dict[str, float]) -> float:
        """The weighted loss of the whole split, from the accumulated mean squared errors."""
        weights = self.loss_config
        loss = weights.energy_weight * values.get("energy_per_atom_rmse", 0.0) ** 2
        loss += weights.forces_weight * values.get("forces_rmse", 0.0) ** 2
        loss += weights.stress_weight * values.get("stress_rmse", 0.0) ** 2
        return loss

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch, batch_index: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        # The EMA weights go back out here, before ModelCheckpoint saves in on_validation_end, so a
        # checkpoint holds the raw weights that match the optimizer state.
        values = self._end_evaluation()
        self.log("val_loss", self._loss_from_metrics(values), prog_bar=True)
        for name, value in values.items():
            self.log(f"val/{name}", value, prog_bar=name in ("energy_rmse", "forces_rmse"))
        if not self.trainer.sanity_checking:
            self.validations += 1
            self.print(validation_line(values, self.current_epoch, self.global_step))  # rank 0

    # ------------------------------------------------------------------------------ optimizer, scheduler
    def configure_optimizers(self):
        config = self.optimizer_config
        optimizer_class = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
        groups = parameter_groups(
            self.model, config.lr, self.pretrained_names, self.finetune_config.pretrained_lr_factor
        )
        # fused: one kernel per step for all parameters (on a CPU, 0.37 ms against 1.75 ms a step for the
        # 3BPA main job's 87k weights); the same update up to rounding
        fused = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
        optimizer = optimizer_class(
            groups, lr=config.lr, weight_decay=config.weight_decay, amsgrad=config.amsgrad, fused=fused
        )
        self._lr_factors = [group["lr"] / config.lr for group in optimizer.param_groups]
        schedule = self.scheduler_config
        if schedule.name == "none":
            return optimizer
        if schedule.name == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch", "strict": False},
            }
        if schedule.name == "budget_cosine":
            from .budget_schedule import BudgetCosineLR, budget_progress

            scheduler = BudgetCosineLR(
                optimizer,
                lambda: budget_progress(self.trainer) if self._trainer is not None else 0.0,
                schedule.min_lr / config.lr,
                schedule.decay_start,
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        total = schedule.cosine_epochs or self.hparams.max_epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _WarmupCosine(schedule.warmup_epochs, total, schedule.min_lr / config.lr)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from equimol import __version__

        checkpoint["equimol_version"] = __version__
        checkpoint["model_config"] = self.model_config.to_dict()
        checkpoint["stage_two_active"] = self.stage_two_active
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_train_epoch_end(self) -> None:
        # Lightning (2.6) skips the ReduceLROnPlateau step at the end of the epoch in which a run
        # restarts (``update_plateau_schedulers=not restarting``): right for checkpoints written at an
        # epoch end, one step lost after a mid-epoch checkpoint. The step is taken at the start of the
        # next epoch, i.e. after this epoch's checkpoints, where an uninterrupted run takes it too.
        if self._resumed_mid_epoch and self.trainer.fit_loop.restarting:
            metric = self.trainer.callback_metrics.get("val_loss")
            self._pending_plateau_metric = None if metric is None else metric.detach().clone()
        self._resumed_mid_epoch = False

    def on_train_epoch_start(self) -> None:
        metric, self._pending_plateau_metric = self._pending_plateau_metric, None
        if metric is None or (self.stage_two_active and self.stage_two.lr is not None):
            return
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step(metric)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.stage_two_active = bool(checkpoint.get("stage_two_active", False))  # the lr is in the optimizer state
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
        self._resumed_mid_epoch = bool(progress) and not progress.get("is_last_batch", True)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._resumed_mid_epoch and hasattr(datamodule, "resume_position"):
            datamodule.resume_position = (int(checkpoint["epoch"]), int(progress["current"]["ready"]))
        if self.ema is not None:
            if "ema" not in checkpoint:
                raise EquimolInputError("the checkpoint has no EMA state, but optimizer.ema_decay is set")
            self.ema.load_state_dict(checkpoint["ema"])


class _WarmupCosine:
    """LR factor at epoch ``e``: ``(e + 1) / warmup`` during warm-up, then cosine from 1 down to ``floor``."""

    def __init__(self, warmup_epochs: int, total_epochs: int, floor: float) -> None:
        self.warmup, self.total, self.floor = warmup_epochs, max(total_epochs, warmup_epochs + 1), floor

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / self.warmup
        progress = min(1.0, (epoch - self.warmup) / (self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
