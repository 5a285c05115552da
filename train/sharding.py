"""DDP batch sharding: each process runs its own share of the data module's seeded batches.

Each process takes every ``world_size``-th batch of the data module's seeded batches, from its
``rank`` on. Training batches are drawn lazily, one group of ``world_size`` at a time
(:func:`equimol.datasets.samplers.shard_batches`): no process materializes the epoch's batch list,
and a last incomplete group is dropped so every process steps the same number of times. Rank
``r``'s ``k``-th step runs global batch ``k * world_size + r``, so a run on ``W`` processes with
batches of ``B`` steps through the same structures as one process with batches of ``W * B``.
Evaluation batches are never dropped and every process takes part in the metrics' reduction,
with or without structures of its own (:mod:`equimol.train.eval_sharding`). A mid-epoch resume
continues the interrupted epoch where it stopped (see :class:`_EpochBatches`).
"""

from __future__ import annotations

from equimol.datasets.datamodule import AtomsDataModule
from equimol.datasets.loader import GraphLoader as DataLoader
from equimol.datasets.samplers import shard_batches, sharded_length

from .eval_sharding import evaluation_loader


class _EpochBatches:
    """The batches of a batch sampler that this process runs: every ``world_size``-th one from ``rank`` on.

    After a mid-epoch resume, ``resume()`` gives ``(epoch, done)``: the first iteration then draws
    that epoch's order and leaves out its first ``done`` batches, which ran before the interruption.
    (Lightning restarts a plain DataLoader at the beginning of the epoch and may draw its first batch
    before it sets the epoch.) ``len()`` stays the full count, which Lightning's restarted loop counts against.
    """

    def __init__(self, batch_sampler, rank: int, world_size: int, resume=lambda: None) -> None:
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size
        self.resume = resume
        self.sampler = getattr(batch_sampler, "sampler", None)  # Lightning calls sampler.set_epoch here

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        # a generator: nothing is drawn before the first next()
        position = self.resume()
        done = 0
        if position is not None:
            epoch, done = position
            self.set_epoch(epoch)
        yield from shard_batches(self.batch_sampler, self.rank, self.world_size, skip=done)

    def __len__(self) -> int:
        return sharded_length(len(self.batch_sampler), self.world_size)


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
        if not training:
            return evaluation_loader(loader, rank, world_size)
        batches = _EpochBatches(loader.batch_sampler, rank, world_size, self._take_resume_position)
        if trainer is not None:
            # Lightning counts len() of a (re)loaded training loader before it sets the epoch; with
            # data.max_edges the number of batches depends on the epoch's order (see train/run.py)
            batches.set_epoch(trainer.current_epoch)
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
