"""One process of ``test_train_eval_sharding``: evaluate a tiny float64 model on shared-out batches, reduce over gloo.

``python eval_sharding_worker.py RANK STORE_FILE DATA_FILE OUT_JSON`` (3 processes). Every process runs
every scenario ``(structures, batch size)`` on 1, 2 and 3 processes (gloo subgroups of the first 1, 2, 3
ranks), as Lightning would: a process whose loader had no batch would skip the evaluation and the
reduction, so each must have at least one. Rank 0 also computes the one-process reference (no
sharding, no reduction) and writes ``{"reference": {...}, "sharded": {...}}``.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
from equimol.datasets.samplers import StructureBatchSampler
from equimol.train.eval_sharding import evaluation_loader
from equimol.train.metrics import ErrorMetrics
from torch.utils.data import Subset
from torch_geometric.loader import DataLoader

from equimol.models import build_model

SCENARIOS = ((5, 2), (4, 2), (2, 2), (1, 1))  # 3 batches; 2 batches (re-cut); 1 batch; 1 structure (padding)
WORLD = 3


def metrics_of(model, loader, reduce=None) -> dict[str, float]:
    metrics = ErrorMetrics()
    for batch in loader:
        prediction = model(batch, compute_forces=True)
        metrics.update({k: v.detach() for k, v in prediction.items()}, batch, batch.energy.view(-1))
    if reduce is not None:
        metrics.reduce(reduce)
    return metrics.compute()


def main() -> None:
    rank, store, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    groups = {size: dist.new_group(list(range(size))) for size in (1, 2, 3)}
    config = {"species": ["H", "C", "N", "O"], "channels": 4, "lmax": 1, "num_layers": 1, "radial_cutoff": 4.0}
    model = build_model({**config, "avg_num_neighbors": 8.0, "dtype": "float64", "seed": 3}).eval()
    dataset = AtomsDataset([data], LabelSettings(radial_cutoff=4.0, dtype=torch.float64))
    reference, sharded = {}, {}
    for structures, batch_size in SCENARIOS:
        subset = Subset(dataset, list(range(structures)))
        full = DataLoader(subset, batch_sampler=StructureBatchSampler(structures, batch_size, shuffle=False))
        if rank == 0:
            reference[f"{structures}/{batch_size}"] = metrics_of(model, full)
        for size, group in groups.items():
            if rank >= size:
                continue
            loader = evaluation_loader(full, rank, size)
            assert len(loader) > 0, f"rank {rank} of {size} has no evaluation batch ({structures}/{batch_size})"
            values = metrics_of(model, loader, lambda sums, g=group: (dist.all_reduce(sums, group=g), sums)[1])
            if rank == 0:
                sharded[f"{structures}/{batch_size}/{size}"] = values
    if rank == 0:
        with open(out, "w") as handle:
            json.dump({"reference": reference, "sharded": sharded}, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
