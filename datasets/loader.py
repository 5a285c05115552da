"""Batches of labelled graphs whose structures all carry the same labels.

torch-geometric collates a batch by the fields of its first graph: a batch whose first structure has
a stress label and another has none fails with a bare ``KeyError: 'stress'``, and one whose first
structure has none silently drops the others' stress. Partial labels are therefore **refused**:
:class:`GraphLoader` (torch-geometric's ``DataLoader`` with :class:`LabelCheck` in front of its
collation) raises a :class:`~equimol.datasets.readers.DataFormatError` naming one structure with the
label and one without, for energy, forces and stress alike. Give every structure the label, or
switch it off (``data.stress_key: null``, ``--stress-key none``).
"""

from __future__ import annotations

from torch_geometric.loader import DataLoader

from .readers import DataFormatError

LABELS = ("energy", "forces", "stress")


def _name(graph) -> str:
    sid = getattr(graph, "sid", None)
    fid = getattr(graph, "fid", None)
    frame = int(fid.reshape(-1)[0]) if fid is not None and hasattr(fid, "reshape") else fid
    return f"structure {sid!r}, frame {frame}" if sid is not None else f"frame {frame}"


def check_same_labels(graphs: list) -> None:
    """Raise :class:`DataFormatError` if some of ``graphs`` carry a label of :data:`LABELS` and others do not."""
    for label in LABELS:
        present = [label in graph for graph in graphs]
        if any(present) and not all(present):
            with_label, without = graphs[present.index(True)], graphs[present.index(False)]
            raise DataFormatError(
                f"{_name(without)} has no {label} label but {_name(with_label)} has one: {label} labels on some "
                f"structures only are refused; give every structure a {label} or none "
                f"(data.{label}_key: null, --{label}-key none)"
            )


class LabelCheck:
    """A collate function: :func:`check_same_labels`, then ``collate`` (picklable, for loader workers)."""

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, graphs: list):
        check_same_labels(graphs)
        return self.collate(graphs)


class GraphLoader(DataLoader):
    """torch-geometric's ``DataLoader`` whose batches are checked by :func:`check_same_labels` (same arguments)."""

    def __init__(self, dataset, *args, **kwargs) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.collate_fn = LabelCheck(self.collate_fn)
