"""The set of channel-wise tensor-product paths between three irreps.

A path ``(i1, i2, i_out)`` couples irrep ``i1`` of the first input with irrep ``i2`` of the second
into irrep ``i_out`` of the output. It is allowed when ``l3`` lies in ``|l1 - l2| .. l1 + l2``
(triangle rule) and the parities multiply, ``p3 = p1 p2`` (O(3) selection rule). The ``cg``
backend has every allowed path; backends with further selection rules (``gaunt``: ``l1 + l2 + l3``
even) filter this list.
"""

from __future__ import annotations

from dataclasses import dataclass

from e3nn import o3


@dataclass(frozen=True)
class Path:
    """One coupling path: indices into the three irreps lists and the degrees they carry."""

    i1: int
    i2: int
    i_out: int
    l1: int
    l2: int
    l3: int


def allowed_paths(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps) -> list[Path]:
    """Every parity- and triangle-allowed path, ordered by ``(i_out, i1, i2)``.

    The order is part of the weight layout of backends with per-path weights.
    """
    paths = []
    for i_out, (_, ir_out) in enumerate(irreps_out):
        for i1, (_, ir1) in enumerate(irreps_in1):
            for i2, (_, ir2) in enumerate(irreps_in2):
                if ir_out in ir1 * ir2:
                    paths.append(Path(i1, i2, i_out, ir1.l, ir2.l, ir_out.l))
    return paths
