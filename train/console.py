"""What a training run prints: one line per validation, and none of Lightning's messages users cannot act on.

**Validation line** (rank 0, not during Lightning's sanity check), in meV as MACE prints it::

    validation epoch 3 step 120: E 1.23 meV/atom (33.2 meV), F 45.6 meV/Å, S 0.12 meV/Å³

the energy RMSE per atom and per structure, the force-component RMSE and, when the data have stress,
the stress-component RMSE (:mod:`equimol.train.metrics`).

**Silenced** by :func:`quiet_lightning` for the length of a run, each by its own message (no category
or module is ignored as a whole):

* Lightning's tip to install ``litlogger`` (an advertisement, logged at INFO on every run);
* ``isinstance(treespec, LeafSpec)`` deprecation, raised inside Lightning's own ``_pytree`` helper;
* ``ModelCheckpoint(monitor='val_loss') could not find the monitored key``: a run shorter than an epoch
  saves step checkpoints before its first validation; :func:`equimol.train.run.train` validates at the
  end of such a run, so ``best.ckpt`` exists anyway;
* the mid-epoch resume warning (``dataloader is not resumable``): equimol restores the position inside
  the epoch itself (``datamodule.resume_position``, :mod:`equimol.train.sharding`);
* when resuming, ``Checkpoint directory ... exists and is not empty`` (the run folder is reused on purpose).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

KNOWN_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"`ModelCheckpoint\(monitor='val_loss'\)` could not find the monitored key",
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
)
RESUME_WARNINGS = (r"Checkpoint directory .* exists and is not empty",)
_TIP_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


@contextlib.contextmanager
def quiet_lightning(resuming: bool = False) -> Iterator[None]:
    """Silence the messages of the module docstring inside the block; everything else is shown as usual."""
    tip_filter = _DropTip()
    logger = logging.getLogger(_TIP_LOGGER)
    logger.addFilter(tip_filter)
    try:
        with warnings.catch_warnings():
            for message in KNOWN_WARNINGS + (RESUME_WARNINGS if resuming else ()):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        logger.removeFilter(tip_filter)


def validation_line(values: dict[str, float], epoch: int, step: int) -> str:
    """The console line of one validation (module docstring) from :class:`~equimol.train.metrics.ErrorMetrics`."""
    parts = []
    if "energy_per_atom_rmse" in values:
        energy = f"E {1e3 * values['energy_per_atom_rmse']:.2f} meV/atom"
        parts.append(energy + (f" ({1e3 * values['energy_rmse']:.1f} meV)" if "energy_rmse" in values else ""))
    if "forces_rmse" in values:
        parts.append(f"F {1e3 * values['forces_rmse']:.1f} meV/Å")
    if "stress_rmse" in values:
        parts.append(f"S {1e3 * values['stress_rmse']:.3f} meV/Å³")
    return f"validation epoch {epoch} step {step}: " + ", ".join(parts)
