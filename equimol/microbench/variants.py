"""The benchmark variants of the tensor-product backends: the option sets ``equimol bench`` times for each.

``equimol bench tp --backends gaunt`` times every variant of ``gaunt`` (``gaunt/grid``, ``gaunt/edge``,
``gaunt/compiled``); ``gaunt/edge`` picks one. They live here, not on the backend classes: a backend
is the product, and which option sets are worth timing is the benchmark's choice.
"""

from __future__ import annotations

#: ``{backend: {variant: backend options}}``; a backend without an entry is timed with its defaults.
BENCHMARK_VARIANTS: dict[str, dict[str, dict]] = {
    "cp": {
        "factors": {"cp_rank": "7L2", "strategy": "factors"},
        "edge": {"cp_rank": "7L2", "strategy": "edge"},
    },
    "gaunt": {
        "grid": {"strategy": "grid"},
        "edge": {"strategy": "edge"},
        "compiled": {"strategy": "edge", "compile_edge_product": True},
    },
}
