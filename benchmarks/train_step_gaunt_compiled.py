"""Eager training-step time with the Gaunt message product compiled (``tp_options: {compile_edge_product: true}``).

    python benchmarks/train_step_gaunt_compiled.py [--data FILE] [--repeats N] [--out STEM] [--overwrite]

Model: the model section of ``configs/3bpa_quick.yaml`` (32 channels, L = 1 node features, an atomic
basis up to L = 3, 2 product-basis layers, Gaunt many-body of correlation 3), float32, with its
message product ``cg``, ``gaunt`` (``strategy: edge``) or ``gaunt`` with ``compile: true``; fixed
statistics instead of ``auto``. One step is what the trainer does eagerly (``trainer.compile_step: false``):
energy and forces with ``create_graph``, the loss ``E^2 + 100 F^2`` summed, ``backward``. The three
models alternate step by step in one process on one intra-op thread, on one batch of 5 3BPA frames;
medians, the first step (compilation included) and the machine are recorded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from pathlib import Path

import ase.io
import torch
from _common import SHARED_DATA, interleaved, markdown_table, parse_stem, quick_3bpa_model, write_json, write_markdown
from torch_geometric.data import Batch

from equimol.graph import atoms_to_graph
from equimol.models import build_model
from equimol.utils.allocator import retain_freed_memory
from equimol.utils.machine import describe_machine

SERIES = {
    "cg": {"tp_backend": "cg"},
    "gaunt/edge": {"tp_backend": "gaunt", "tp_options": {"strategy": "edge"}},
    "gaunt/compiled": {"tp_backend": "gaunt", "tp_options": {"strategy": "edge", "compile_edge_product": True}},
}


def step(model, batch) -> float:
    start = time.perf_counter()
    out = model(batch)
    loss = out["energy"].pow(2).sum() + 100.0 * out["forces"].pow(2).sum()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "3bpa" / "train_300K.xyz"))
    parser.add_argument("--repeats", type=int, default=10)
    args = parse_stem(parser, "train_step_gaunt_compiled")
    torch.set_num_threads(1)
    retain_freed_memory()
    frames = ase.io.read(args.data, index=":5")
    changes = {"avg_num_neighbors": 20.0, "dtype": "float32"}
    models = {label: build_model(quick_3bpa_model(**changes, **spec)).train() for label, spec in SERIES.items()}
    cutoff = next(iter(models.values())).config.radial_cutoff
    batch = Batch.from_data_list([atoms_to_graph(atoms, cutoff, torch.float32) for atoms in frames])
    record = {"machine": describe_machine("cpu"), "load_average_start": list(os.getloadavg()), "results": []}
    first = {label: step(model, batch) for label, model in models.items()}  # compilation included
    times = interleaved({label: partial(step, model, batch) for label, model in models.items()}, args.repeats, 1)
    baseline = statistics.median(times["cg"])
    rows = []
    for label, values in times.items():
        median = statistics.median(values)
        record["results"].append({"label": label, "step_s": median, "all_s": values, "first_step_s": first[label]})
        rows.append((label, f"{1e3 * median:.1f}", f"{median / baseline:.2f}", f"{first[label]:.1f}"))
    record["load_average_end"] = list(os.getloadavg())
    record["settings"] = {"batch": "5 frames of " + Path(args.data).name, "repeats": args.repeats, "threads": 1}
    write_json(args.out, record)
    lines = [
        "# Eager training step with the Gaunt message product compiled",
        "",
        f"`benchmarks/train_step_gaunt_compiled.py`; {record['machine']['cpu']}, torch "
        f"{record['machine']['torch']}, one thread, float32, batch of 5 3BPA frames, median of "
        f"{args.repeats} steps; load average {record['load_average_start'][0]:.2f} at the start, "
        f"{record['load_average_end'][0]:.2f} at the end.",
        "",
        *markdown_table(("message product", "step ms", "/ cg", "first step s"), rows),
    ]
    write_markdown(args.out, lines)


if __name__ == "__main__":
    main()
