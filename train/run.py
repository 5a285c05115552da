"""One training run from a validated :class:`~equimol.train.config.TrainingConfig`.

Steps: seed everything; open the data (``AtomsDataModule``), fill the model's ``auto`` keys from
the training split's cached statistics; build the :class:`~equimol.train.module.PotentialModule`
and a Lightning ``Trainer``; fit (optionally resuming from ``run_dir/checkpoints/last.ckpt``);
then, on rank 0, export the best EMA model to ``run_dir/model.pt`` and evaluate it on the test
split (table, ``run_dir/test_metrics.json``, ``run_dir/test_parity.png``).

Run folder::

    run_dir/checkpoints/best.ckpt     lowest val_loss (written atomically: temporary file, then rename)
    run_dir/checkpoints/last.ckpt     every epoch, and every trainer.checkpoint_every_n_steps steps
    run_dir/csv/, run_dir/tensorboard/  logs
    run_dir/config.yaml                 the resolved configuration
    run_dir/model.pt                    the exported model (equimol.export)

**DDP.** ``trainer.strategy: ddp`` uses Lightning's DDP (gloo on CPU, NCCL on GPUs). Each process
takes every ``world_size``-th batch of the data module's seeded batches (training batches are
cut to a multiple of ``world_size`` so every process steps the same number of times).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from equimol.datasets.datamodule import AtomsDataModule
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from torch_geometric.loader import DataLoader

from equimol.utils.io import atomic_write

from .config import AUTO, TrainingConfig
from .module import PotentialModule


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through :func:`~equimol.utils.io.atomic_write`: never half a checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)


class _EpochBatches:
    """The batches of a batch sampler that this process runs: every ``world_size``-th one from ``rank`` on.

    After a mid-epoch resume, ``resume()`` gives ``(epoch, done)``: the first iteration then draws
    that epoch's order and leaves out its first ``done`` batches, which ran before the interruption.
    (Lightning restarts a plain DataLoader at the beginning of the epoch and may draw its first batch
    before it sets the epoch.) ``len()`` stays the full count, which Lightning's restarted loop counts against.
    """

    def __init__(self, batch_sampler, rank: int, world_size: int, training: bool, resume=lambda: None) -> None:
        self.batch_sampler, self.rank, self.world_size, self.training = batch_sampler, rank, world_size, training
        self.resume = resume
        self.sampler = getattr(batch_sampler, "sampler", None)  # Lightning calls sampler.set_epoch here

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        batches = [list(batch) for batch in self.batch_sampler]
        if self.training:
            batches = batches[: len(batches) - len(batches) % self.world_size]
        elif len(batches) < self.world_size:
            # fewer evaluation batches than processes: smaller batches, so that every process gets one
            flat = [index for batch in batches for index in batch]
            if len(flat) < self.world_size:
                raise ValueError(f"{len(flat)} evaluation structures cannot be shared by {self.world_size} processes")
            size = -(-len(flat) // self.world_size)
            batches = [flat[start : start + size] for start in range(0, len(flat), size)]
        return batches[self.rank :: self.world_size]

    def __iter__(self):
        # a generator: nothing is drawn before the first next()
        position = self.resume()
        done = 0
        if position is not None:
            epoch, done = position
            self.set_epoch(epoch)
        yield from self._batches()[done:]

    def __len__(self) -> int:
        return len(self._batches())


class ShardedAtomsDataModule(AtomsDataModule):
    """:class:`AtomsDataModule` whose loaders give each DDP process its own share of the batches and
    that continues an interrupted epoch where it stopped (see :class:`_EpochBatches`)."""

    resume_position: tuple[int, int] | None = None  # set by PotentialModule.on_load_checkpoint

    def _take_resume_position(self) -> tuple[int, int] | None:
        position, self.resume_position = self.resume_position, None
        return position

    def _wrap(self, loader: DataLoader, training: bool) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        world_size = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if world_size <= 1 and not training:
            return loader
        batches = _EpochBatches(
            loader.batch_sampler, rank, world_size, training, self._take_resume_position if training else (lambda: None)
        )
        return DataLoader(
            loader.dataset,
            batch_sampler=batches,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._wrap(super().train_dataloader(), training=True)

    def val_dataloader(self) -> DataLoader:
        return self._wrap(super().val_dataloader(), training=False)


def resolve_model_config(model: dict, datamodule: AtomsDataModule) -> dict:
    """The ``model:`` section with its ``auto`` keys taken from the training split (see the config docstring).

    * ``avg_num_neighbors``: edges per atom at the data's cutoff;
    * ``e0s``: the data's per-element references (none: zeros);
    * ``energy_shift``: least-squares per-species energy (after references), 0 for species absent from the data;
    * ``energy_scale``: the RMS force component (eV/Å), 1 without forces.
    """
    from equimol.nn.embedding import parse_species

    model = dict(model)
    wanted = [key for key, value in model.items() if value == AUTO]
    if not wanted:
        return model
    statistics = datamodule.statistics("train")
    species = parse_species(model["species"])
    missing = sorted(set(statistics.species) - set(species))
    if missing:
        raise ValueError(f"model.species {species} lacks element(s) {missing} found in the training data")
    if model.get("avg_num_neighbors") == AUTO:
        model["avg_num_neighbors"] = float(statistics.avg_num_neighbors)
    if model.get("e0s") == AUTO:
        references = datamodule.element_references
        if references is None:
            model["e0s"] = None
        else:
            known = references.as_dict()
            absent = [z for z in species if z not in known]
            if absent:
                raise ValueError(f"model.e0s: auto, but the element references have no energy for {absent}")
            model["e0s"] = {z: known[z] for z in species}
    if model.get("energy_shift") == AUTO:
        model["energy_shift"] = {z: float(statistics.per_species_energy_shift.get(z, 0.0)) for z in species}
    if model.get("energy_scale") == AUTO:
        scale = statistics.force_rms
        model["energy_scale"] = float(scale) if scale == scale and scale > 0 else 1.0
    return model


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
    return L.Trainer(
        default_root_dir=str(run_dir),
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        strategy=strategy,
        max_epochs=trainer.max_epochs,
        max_steps=trainer.max_steps,
        max_time=max_time,
        precision="32-true",  # dtype is the model's and the data's (trainer.precision); Lightning must not cast
        gradient_clip_val=trainer.gradient_clip_val,
        check_val_every_n_epoch=trainer.check_val_every_n_epoch,
        log_every_n_steps=trainer.log_every_n_steps,
        enable_progress_bar=trainer.progress_bar,
        inference_mode=False,  # validation computes forces, i.e. gradients
        use_distributed_sampler=False,  # ShardedAtomsDataModule shards the seeded batches itself
        plugins=[AtomicCheckpointIO()],
        callbacks=_callbacks(config, run_dir),
        logger=[CSVLogger(str(run_dir), name="csv"), TensorBoardLogger(str(run_dir), name="tensorboard")],
    )


def train(config: TrainingConfig, resume: bool = False) -> dict[str, Any]:
    """Fit, export and test (see the module docstring); returns ``{"run_dir", "model", "test"}``.

    Raises:
        FileNotFoundError: ``resume`` without ``run_dir/checkpoints/last.ckpt``.
    """
    trainer_config = config.trainer
    run_dir = Path(trainer_config.run_dir).expanduser().resolve()
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {last} (trainer.run_dir={trainer_config.run_dir!r})")
    if trainer_config.num_threads:
        torch.set_num_threads(trainer_config.num_threads)
    L.seed_everything(trainer_config.seed, workers=True, verbose=False)
    datamodule = ShardedAtomsDataModule.from_config(config.data)
    datamodule.setup("fit")
    model_config = resolve_model_config(config.model, datamodule)
    references = datamodule.element_references
    module = PotentialModule(
        model=model_config,
        loss=config.as_dict()["loss"],
        optimizer=config.as_dict()["optimizer"],
        scheduler=config.as_dict()["scheduler"],
        label_references=None if references is None else references.as_dict(),
        max_epochs=trainer_config.max_epochs,
    )
    trainer = build_trainer(config, run_dir)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**config.as_dict(), "model": model_config}
        with atomic_write(run_dir / "config.yaml", "w") as handle:
            handle.write(yaml.safe_dump(resolved, sort_keys=False))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    result: dict[str, Any] = {"run_dir": str(run_dir), "model": None, "test": None}
    if not trainer.is_global_zero:
        return result
    from equimol.export import export_checkpoint

    best = run_dir / "checkpoints" / "best.ckpt"
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
