"""One training run from a validated :class:`~equimol.train.config.TrainingConfig`.

Steps: seed everything; open the data (``AtomsDataModule``), fill the model's ``auto`` keys from
the training split's cached statistics; build the :class:`~equimol.train.module.PotentialModule`
and a Lightning ``Trainer``; fit (optionally resuming from ``run_dir/checkpoints/last.ckpt``);
then, on rank 0, export the best EMA model to ``run_dir/model.pt`` and evaluate it on the test
split (table, ``run_dir/test_metrics.json``, ``run_dir/test_parity.png``).

Run folder::

    run_dir/checkpoints/best.ckpt     lowest val_loss (written atomically: temporary file, then rename); a run
                                      that ends before its first validation validates once at its end
    run_dir/checkpoints/last.ckpt     every epoch, and every trainer.checkpoint_every_n_steps steps
    run_dir/csv/, run_dir/tensorboard/, run_dir/wandb/  logs (trainer.logger)
    run_dir/config.yaml                 the resolved configuration
    run_dir/model.pt                    the exported model (equimol.export)

**DDP.** ``trainer.strategy: ddp`` uses Lightning's DDP (gloo on CPU, NCCL on GPUs); the batches
are shared out by :mod:`equimol.train.sharding`. Checkpoints are written and exported by
:mod:`equimol.train.checkpoints`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from equimol.datasets.datamodule import AtomsDataModule
from equimol.datasets.statistics_sharing import environment_int
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from equimol.errors import EquimolInputError
from equimol.utils.allocator import retain_freed_memory
from equimol.utils.io import atomic_write

from .checkpoints import AtomicCheckpointIO, export_checkpoint
from .config import AUTO_STAND_INS, ModelConfig, TrainingConfig
from .console import quiet_lightning
from .cpu_budget import CPUTimeBudget
from .module import PotentialModule
from .run_folder import check_run_folder, clear_run_folder, run_folder_lock
from .sharding import ShardedAtomsDataModule


def is_first_process() -> bool:
    """Whether this process is the first (global rank 0) of a distributed launch, or runs alone.

    Read from the environment, before Lightning has set up anything: ``RANK`` (torchrun), then a
    non-zero ``LOCAL_RANK`` (a later process on its machine; Lightning's own launcher sets only this
    and ``NODE_RANK``), then ``SLURM_PROCID`` (``srun``), then ``NODE_RANK`` or torchrun's ``GROUP_RANK``.
    torchrun sets no ``NODE_RANK``: reading only that and ``LOCAL_RANK`` made the first process of every
    machine take itself for the first of the launch.
    """
    rank = environment_int("RANK")
    if rank is not None:
        return rank == 0
    if (environment_int("LOCAL_RANK") or 0) != 0:
        return False
    rank = environment_int("SLURM_PROCID")
    if rank is not None:
        return rank == 0
    return (environment_int("NODE_RANK") or 0) == 0 and (environment_int("GROUP_RANK") or 0) == 0


def resolve_model_config(model: ModelConfig, datamodule: AtomsDataModule) -> ModelConfig:
    """The model config with its ``auto`` keys taken from the training split (:meth:`ModelConfig.resolve_auto`).

    * ``avg_num_neighbors``: edges per atom at the data's cutoff;
    * ``e0s``: the data's per-element references (none: zeros);
    * ``energy_shift``: least-squares per-species energy (after references), 0 for species absent from the data;
    * ``energy_scale``: the RMS force component (eV/Å), 1 without forces.
    """
    from ase.data import chemical_symbols

    from equimol.nn.embedding import parse_species

    statistics = datamodule.statistics("train")  # also without "auto" keys: the species check needs it
    species = parse_species(model.species)
    missing = sorted(set(statistics.species) - set(species))
    if missing:
        raise EquimolInputError(
            f"model.species {[chemical_symbols[z] for z in species]} lacks element(s) "
            f"{[chemical_symbols[z] for z in missing]} found in the training data; add them to model.species"
        )
    unresolved = model.unresolved()
    values: dict[str, Any] = {}
    if "avg_num_neighbors" in unresolved:
        values["avg_num_neighbors"] = float(statistics.avg_num_neighbors)
    if "e0s" in unresolved:
        references = datamodule.element_references
        if references is None:
            values["e0s"] = None
        else:
            known = references.as_dict()
            absent = [z for z in species if z not in known]
            if absent:
                raise EquimolInputError(f"model.e0s: auto, but the element references have no energy for {absent}")
            values["e0s"] = {z: known[z] for z in species}
    if "energy_shift" in unresolved:
        values["energy_shift"] = {z: float(statistics.per_species_energy_shift.get(z, 0.0)) for z in species}
    if "energy_scale" in unresolved:
        scale = statistics.force_rms
        values["energy_scale"] = float(scale) if scale == scale and scale > 0 else 1.0
    return model.resolve_auto(values)


def physical_terms(model: ModelConfig):
    """The model's physical terms (ZBL, D3) in float64, or None: the data statistics are taken on the labels
    minus them (:mod:`equimol.models.physical`). ``auto`` keys do not change them and get stand-ins."""
    from equimol.models.physical import PhysicalTerms

    config = model.resolve_auto({key: AUTO_STAND_INS[key] for key in model.unresolved()})
    return PhysicalTerms(config) if PhysicalTerms.wanted(config) else None


def statistics_comment(report: dict[str, Any]) -> str:
    """``#`` lines for the top of ``config.yaml``: the statistics sample and its standard errors.

    A comment, so that ``config.yaml`` stays a valid configuration for ``equimol train``.
    """
    shift_errors = ", ".join(f"{z}: {e:.3g}" for z, e in report["per_species_energy_shift_se"].items())
    return (
        f"# training-split statistics from a seeded sample of {report['sample_size']} of "
        f"{report['num_structures']} structures (data.statistics_sample, seed {report['sample_seed']}):\n"
        f"#   avg_num_neighbors {report['avg_num_neighbors']:.6g}"
        f" (standard error {report['avg_num_neighbors_se']:.3g})\n"
        f"#   force_rms {report['force_rms']:.6g} eV/A (standard error {report['force_rms_se']:.3g})\n"
        f"#   per-species energy shift standard errors (eV): {{{shift_errors}}}\n"
    )


def _callbacks(config: TrainingConfig, run_dir: Path) -> list:
    trainer = config.trainer
    folder = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=folder,
            filename="best",
            monitor="val_loss",
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        ),
        ModelCheckpoint(dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if trainer.checkpoint_every_n_steps:
        callbacks.append(
            ModelCheckpoint(
                dirpath=folder,
                filename="last",
                save_top_k=1,
                enable_version_counter=False,
                every_n_train_steps=trainer.checkpoint_every_n_steps,
            )
        )
    if trainer.max_cpu_time is not None or trainer.snapshot_cpu_times:
        callbacks.append(CPUTimeBudget(trainer.max_cpu_time, trainer.snapshot_cpu_times, run_dir))
    if trainer.early_stopping_patience is not None:
        # strict=False: a run stopped by max_time/max_steps before its first validation is not an error
        callbacks.append(
            EarlyStopping(monitor="val_loss", mode="min", patience=trainer.early_stopping_patience, strict=False)
        )
    return callbacks


def build_trainer(config: TrainingConfig, run_dir: Path) -> L.Trainer:
    """The Lightning ``Trainer`` of the ``trainer:`` section (see the module docstring)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning.pytorch.strategies import DDPStrategy

    trainer = config.trainer
    strategy: Any = trainer.strategy
    if strategy == "ddp":
        # Buffers of an equimol model are constants, so they need no broadcast; without the broadcast
        # a forward pass has no collective call and processes may evaluate different numbers of batches.
        backend = "gloo" if trainer.accelerator == "cpu" else None
        strategy = DDPStrategy(broadcast_buffers=False, process_group_backend=backend)
    max_time = trainer.max_time
    if isinstance(max_time, (int, float)):
        max_time = {"seconds": float(max_time)}
    loggers = {
        "csv": lambda: CSVLogger(str(run_dir), name="csv"),
        "tensorboard": lambda: TensorBoardLogger(str(run_dir), name="tensorboard"),
        "wandb": lambda: _wandb_logger(trainer.wandb_project, run_dir),
    }
    return L.Trainer(
        default_root_dir=str(run_dir),
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        num_nodes=trainer.num_nodes,
        strategy=strategy,
        max_epochs=trainer.max_epochs,
        max_steps=trainer.max_steps,
        max_time=max_time,
        precision="32-true",  # dtype is the model's and the data's (trainer.precision); Lightning must not cast
        gradient_clip_val=trainer.gradient_clip_val,
        check_val_every_n_epoch=trainer.check_val_every_n_epoch,
        # Edge-budget batches (data.max_edges) give each epoch's order its own number of batches, and
        # Lightning validates (and ends the epoch) at the batch count of the loader it last loaded:
        # without a reload per epoch, a shorter later epoch would never reach validation.
        reload_dataloaders_every_n_epochs=1 if config.data.get("max_edges") is not None else 0,
        log_every_n_steps=trainer.log_every_n_steps,
        enable_progress_bar=trainer.progress_bar,
        inference_mode=False,  # validation computes forces, i.e. gradients
        use_distributed_sampler=False,  # ShardedAtomsDataModule shards the seeded batches itself
        plugins=[AtomicCheckpointIO()],
        callbacks=_callbacks(config, run_dir),
        logger=[loggers[name]() for name in trainer.logger] or False,
    )


def _validate_at_end(trainer: L.Trainer, module: PotentialModule, datamodule, best: Path) -> None:
    """Validate once and write ``best`` if there is none yet or this ``val_loss`` beats the best one's."""
    trainer.validate(module, datamodule=datamodule, verbose=False)
    score = trainer.callback_metrics.get("val_loss")
    monitor = next(callback for callback in trainer.checkpoint_callbacks if callback.monitor == "val_loss")
    previous = monitor.best_model_score
    if not best.is_file() or previous is None or (score is not None and float(score) < float(previous)):
        trainer.save_checkpoint(best)


def _wandb_logger(project: str, run_dir: Path):
    """Weights & Biases (the ``wandb`` extra; ``WANDB_MODE=offline`` writes ``run_dir/wandb`` without an account)."""
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project=project, name=run_dir.name, save_dir=str(run_dir))


def train(config: TrainingConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Fit, export and test one run (see the module docstring); returns ``{"run_dir", "model", "test"}``.

    A committee (``trainer.committee_seeds``) is many runs: :func:`equimol.train.launch.train` chooses.

    ``resume`` continues the run in ``trainer.run_dir``; ``overwrite`` replaces it. Without either, a
    folder that holds a run is refused (:mod:`equimol.train.run_folder`).

    Raises:
        RunFolderError: the run folder cannot be used as asked (checked before anything is written).
    """
    if config.trainer.committee_seeds:
        raise ValueError(
            "trainer.committee_seeds asks for a committee of runs; train it with equimol.train.launch.train"
        )
    run_dir = Path(config.trainer.run_dir).expanduser().resolve()
    if not is_first_process():
        # only the first process of the launch locks and checks the folder: the others start while (or
        # after) it writes there, and would find "a run already there" or the lock taken
        return _fit(config, run_dir, resume)
    with run_folder_lock(run_dir):
        check_run_folder(run_dir, config.as_dict(), resume, overwrite)
        return _fit(config, run_dir, resume)


def _fit(config: TrainingConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """:func:`train` after the run folder's checks: fit, export, test."""
    trainer_config = config.trainer
    last = run_dir / "checkpoints" / "last.ckpt"
    if trainer_config.num_threads:
        torch.set_num_threads(trainer_config.num_threads)
    if trainer_config.retain_freed_memory:
        retain_freed_memory()
    L.seed_everything(trainer_config.seed, workers=True, verbose=False)
    datamodule = ShardedAtomsDataModule.from_config(config.data)
    datamodule.use_physical_terms(physical_terms(config.model))
    datamodule.setup("fit")
    model_config = resolve_model_config(config.model, datamodule)
    references = datamodule.element_references
    module = PotentialModule(
        model=model_config,
        loss=config.loss,
        optimizer=config.optimizer,
        scheduler=config.scheduler,
        label_references=None if references is None else references.as_dict(),
        max_epochs=trainer_config.max_epochs,
        finetune=config.finetune,
        compile_step=trainer_config.compile_step,
        init_from=config.init_from,
    )
    with quiet_lightning(resuming=resume):  # the Trainer's own tip
        trainer = build_trainer(config, run_dir)
    sampled = bool(config.model.unresolved()) or config.data.get("max_edges") is not None
    report = datamodule.statistics("train").sampling_report() if sampled else None
    if trainer.is_global_zero:
        if not resume:  # an overwritten run, or what a failed start left, goes only now, before the first write
            clear_run_folder(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = dataclasses.replace(config, model=model_config).as_dict()
        with atomic_write(run_dir / "config.yaml", "w") as handle:
            handle.write((statistics_comment(report) if report else "") + yaml.safe_dump(resolved, sort_keys=False))
    if report is not None:
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(statistics_comment(report).replace("# ", "").replace("#", "").rstrip())
        for logger in trainer.loggers:  # csv/.../hparams.yaml and TensorBoard
            logger.log_hyperparams({"statistics": report})
    best = run_dir / "checkpoints" / "best.ckpt"
    with quiet_lightning(resuming=resume):
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
        if module.validations == 0 and not trainer.interrupted:  # ended before its first validation
            _validate_at_end(trainer, module, datamodule, best)
    result: dict[str, Any] = {"run_dir": str(run_dir), "model": None, "test": None}
    if not trainer.is_global_zero:
        return result
    source = best if best.is_file() else last
    model_path = run_dir / "model.pt"
    if source.is_file():
        export_checkpoint(source, model_path)
    else:  # no checkpoint at all (e.g. max_time ran out before the first epoch ended): export the module
        from equimol.export import export_model

        if module.ema is not None:
            module.ema.copy_to(module.model)
        export_model(module.model, model_path)
    result["model"] = str(model_path)
    if trainer_config.test_after_fit and datamodule.datasets.get("test") is not None:
        from equimol.export import load_model

        from .evaluate import evaluate, write_report

        model = load_model(model_path)
        loader = AtomsDataModule.test_dataloader(datamodule)
        report = evaluate(
            model,
            loader,
            references=None if references is None else references.as_dict(),
            progress=trainer_config.progress_bar,
        )
        write_report(report, run_dir / "test_metrics.json", run_dir / "test_parity.png", title="test")
        result["test"] = report.metrics
    return result
