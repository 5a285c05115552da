"""DDP batch sharding: each process runs its own share of the data module's seeded batches.

Each process takes every ``world_size``-th batch of the data module's seeded batches, from its
``rank`` on. Training batches are drawn lazily, one group of ``world_size`` at a time
(:func:`equimol.datasets.samplers.shard_batches`): no process materializes the epoch's batch list,
and a last incomplete group is dropped so every process steps the same number of times. Rank
``r``'s ``k``-th step runs global batch ``k * world_size + r``, so a run on ``W`` processes with
batches of ``B`` steps through the same structures as one process with batches of ``W * B``.
Evaluation batches are never dropped; when there are fewer of them than processes, they are
re-cut into smaller batches so that every process gets one. A mid-epoch resume continues the
interrupted epoch where it stopped (see :class:`_EpochBatches`).
"""

from __future__ import annotations

from equimol.datasets.datamodule import AtomsDataModule
from equimol.datasets.samplers import shard_batches, sharded_length
from torch_geometric.loader import DataLoader


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
        """The evaluation batches of this process (training batches are drawn lazily, see ``__iter__``)."""
        batches = [list(batch) for batch in self.batch_sampler]
        if len(batches) < self.world_size:
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
        if self.training:
            yield from shard_batches(self.batch_sampler, self.rank, self.world_size, skip=done)
        else:
            yield from self._batches()[done:]

    def __len__(self) -> int:
        if self.training:
            return sharded_length(len(self.batch_sampler), self.world_size)
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
