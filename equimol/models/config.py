"""The typed model configuration: every hyperparameter of the potential in one place.

Built from the ``model:`` section of a YAML config with :meth:`ModelConfig.from_dict`; an unknown key
(at the top level or under ``spe:``) raises a ValueError that names it. Keys follow MACE/NequIP usage::

    model:
      species: [H, C, N, O]        # atomic numbers or symbols
      channels: 32                 # C: channels per irrep
      lmax: 2                      # node features 32x0e + 32x1o + 32x2e
      sh_lmax: 2                   # edge spherical harmonics (default: lmax)
      num_layers: 2
      num_radial_basis: 8
      radial_cutoff: 5.0           # Å
      envelope_exponent: 5
      radial_mlp_hidden: [64, 64]
      readout_hidden: 16
      tp_backend: cg               # cg | gaunt | cp (any registered backend)
      tp_options: {}               # passed to the backend, e.g. {cp_rank: 28} or {compile: true} (gaunt)
      many_body: none              # none | cg | gaunt
      correlation: 3               # nu_max of the many-body block
      interaction: gated           # gated (TP, gate, residual) | product_basis (MACE: TP basis, then many-body)
      message_lmax: null           # product_basis: degree of the atomic basis A (default lmax; MACE's max_ell)
      self_connection: linear      # linear | species (one self-connection map per element, MACE's skip_tp)
      readout: final               # final (MLP on the last layer) | per_layer (plus a linear head per layer)
      scalar_first_layer: true     # product_basis: the first layer is built on the C x 0e embeddings only (MACE)
      avg_num_neighbors: 12.3      # from the training data (average_num_neighbors)
      e0s: {H: -13.587, C: -1029.489}   # eV, every species, or omitted (zeros)
      energy_shift: 0.0            # eV, a number or a per-species mapping
      energy_scale: 1.0            # eV, a number or a per-species mapping
      spe: {enabled: true, mode: chebyshev, num_filters: 4, polynomial_degree: 8, spectral_scale: null, hidden: 16}
      pair_repulsion: none         # none | zbl (equimol.nn.zbl: screened nuclear repulsion)
      zbl_inner: null              # Å, ZBL switch start for every pair (null: zbl_inner_fraction x covalent sum)
      zbl_outer: null              # Å, ZBL switch end for every pair (null: zbl_outer_fraction x covalent sum)
      zbl_inner_fraction: 0.3      # default switch start, fraction of the sum of the two covalent radii
      zbl_outer_fraction: 0.55     # default switch end: below the shortest bonds of 3BPA and OC20
      dispersion: null             # or {kind: d3, xc: pbe, damping: bj}: D3 through tad-dftd3 (equimol.nn.dispersion)
      dtype: float64               # float32 | float64
      seed: 0

**Two keys take the names** ``cg`` **and** ``gaunt`` **for different parts of the model** (the keys keep
their names so that existing configs load):

* ``tp_backend`` is the *two-body message product* of every interaction layer, node features of the
  sender times the spherical harmonics of the edge, per-edge weights from the radial MLP
  (:mod:`equimol.tp`: ``cg`` the Clebsch-Gordan product, ``gaunt`` the Gaunt product on a sphere
  grid, ``cp`` the CP-decomposed CG tensor, ``cueq`` the ``cg`` product through cuEquivariance).
* ``many_body`` is the *self-product of one node's features* after message passing, up to
  ``correlation`` factors, per-element weights (:mod:`equimol.nn.many_body`: ``cg`` recursive
  Clebsch-Gordan coupling as in MACE, ``gaunt`` the Gaunt powers of :mod:`equimol.manybody.gaunt`,
  ``cueq`` cuEquivariance's symmetric contraction, ``none`` no such block).

The two are chosen independently: ``tp_backend: cg`` with ``many_body: gaunt`` is the main job's model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from equimol.manybody import kinds as many_body_kinds
from equimol.nn.embedding import parse_species
from equimol.nn.spe import SPE_MODES
from equimol.nn.species_linear import SELF_CONNECTIONS
from equimol.nn.zbl import INNER_FRACTION, OUTER_FRACTION
from equimol.utils.dtype import resolve_dtype

PAIR_REPULSIONS = ("none", "zbl")


INTERACTIONS = ("gated", "product_basis")
READOUTS = ("final", "per_layer")


def _reject_unknown(cls: type, values: dict, where: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")


def _require(condition: bool, key: str, expected: str, value) -> None:
    if not condition:
        raise ValueError(f"model config key {key!r} must be {expected}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class SPEConfig:
    """``spe:`` section: stable positional encodings (:mod:`equimol.nn.spe`)."""

    enabled: bool = False
    mode: str = "chebyshev"
    num_filters: int = 4
    polynomial_degree: int = 8
    spectral_scale: float | None = None  # default 2 * avg_num_neighbors
    hidden: int = 16

    @classmethod
    def from_dict(cls, values: dict | None) -> SPEConfig:
        values = {} if values is None else values
        _reject_unknown(cls, values, "model.spe")
        config = cls(**values)
        _require(isinstance(config.enabled, bool), "spe.enabled", "true or false", config.enabled)
        _require(config.mode in SPE_MODES, "spe.mode", f"one of {SPE_MODES}", config.mode)
        _require(
            _is_int(config.num_filters) and config.num_filters >= 1,
            "spe.num_filters",
            "an int >= 1",
            config.num_filters,
        )
        _require(
            _is_int(config.polynomial_degree) and 0 <= config.polynomial_degree <= 32,
            "spe.polynomial_degree",
            "an int in 0..32",
            config.polynomial_degree,
        )
        _require(
            config.spectral_scale is None or (_is_number(config.spectral_scale) and config.spectral_scale > 0),
            "spe.spectral_scale",
            "a positive number or null",
            config.spectral_scale,
        )
        _require(_is_int(config.hidden) and config.hidden >= 1, "spe.hidden", "an int >= 1", config.hidden)
        return config


@dataclass
class ModelConfig:
    """All hyperparameters of :class:`equimol.models.potential.Potential` (see the module docstring)."""

    species: list = field(default_factory=list)
    channels: int = 32
    lmax: int = 2
    sh_lmax: int | None = None
    num_layers: int = 2
    num_radial_basis: int = 8
    radial_cutoff: float = 5.0
    envelope_exponent: int = 5
    radial_mlp_hidden: list = field(default_factory=lambda: [64, 64])
    readout_hidden: int = 16
    tp_backend: str = "cg"
    tp_options: dict = field(default_factory=dict)
    many_body: str = "none"
    correlation: int = 3
    interaction: str = "gated"
    message_lmax: int | None = None
    self_connection: str = "linear"
    readout: str = "final"
    scalar_first_layer: bool = True
    avg_num_neighbors: float | None = None
    e0s: dict | None = None
    energy_shift: float | dict = 0.0
    energy_scale: float | dict = 1.0
    spe: SPEConfig = field(default_factory=SPEConfig)
    pair_repulsion: str = "none"
    zbl_inner: float | None = None
    zbl_outer: float | None = None
    zbl_inner_fraction: float = INNER_FRACTION
    zbl_outer_fraction: float = OUTER_FRACTION
    dispersion: dict | None = None
    dtype: str = "float64"
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Validate the ``model:`` mapping; every error names the offending key."""
        _reject_unknown(cls, values, "model config")
        values = dict(values)
        values["spe"] = SPEConfig.from_dict(values.get("spe"))
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        self.species = parse_species(self.species)
        for key in ("channels", "num_layers", "num_radial_basis", "readout_hidden", "envelope_exponent"):
            value = getattr(self, key)
            _require(_is_int(value) and value >= 1, key, "an int >= 1", value)
        _require(_is_int(self.lmax) and 0 <= self.lmax <= 8, "lmax", "an int in 0..8", self.lmax)
        if self.sh_lmax is None:
            self.sh_lmax = self.lmax
        _require(_is_int(self.sh_lmax) and 0 <= self.sh_lmax <= 8, "sh_lmax", "an int in 0..8", self.sh_lmax)
        _require(self.envelope_exponent >= 2, "envelope_exponent", "an int >= 2 (C^2 cutoff)", self.envelope_exponent)
        _require(
            _is_number(self.radial_cutoff) and self.radial_cutoff > 0,
            "radial_cutoff",
            "a positive number (Å)",
            self.radial_cutoff,
        )
        _require(
            isinstance(self.radial_mlp_hidden, (list, tuple))
            and all(_is_int(h) and h >= 1 for h in self.radial_mlp_hidden),
            "radial_mlp_hidden",
            "a list of positive ints",
            self.radial_mlp_hidden,
        )
        self._check_backend()
        _require(isinstance(self.tp_options, dict), "tp_options", "a mapping", self.tp_options)
        reserved = sorted({"dtype", "device", "internal_weights"} & set(self.tp_options))
        _require(
            not reserved, "tp_options", "free of 'dtype', 'device', 'internal_weights' (the model sets them)", reserved
        )
        many_body_choices = ("none", *many_body_kinds())
        _require(self.many_body in many_body_choices, "many_body", f"one of {many_body_choices}", self.many_body)
        _require(
            _is_int(self.correlation) and 1 <= self.correlation <= 4, "correlation", "an int in 1..4", self.correlation
        )
        _require(self.interaction in INTERACTIONS, "interaction", f"one of {INTERACTIONS}", self.interaction)
        _require(
            isinstance(self.scalar_first_layer, bool), "scalar_first_layer", "true or false", self.scalar_first_layer
        )
        _require(
            self.self_connection in SELF_CONNECTIONS,
            "self_connection",
            f"one of {SELF_CONNECTIONS}",
            self.self_connection,
        )
        _require(self.readout in READOUTS, "readout", f"one of {READOUTS}", self.readout)
        if self.message_lmax is None:
            self.message_lmax = self.lmax
        _require(
            _is_int(self.message_lmax) and self.lmax <= self.message_lmax <= 8,
            "message_lmax",
            f"an int in lmax..8 (lmax = {self.lmax})",
            self.message_lmax,
        )
        _require(
            self.interaction == "product_basis" or self.message_lmax == self.lmax,
            "message_lmax",
            "equal to lmax unless interaction is 'product_basis' (only a many-body product folds higher degrees back)",
            self.message_lmax,
        )
        _require(
            self.interaction != "product_basis" or self.many_body != "none",
            "many_body",
            "'cg' or 'gaunt' with interaction 'product_basis' (the product is that layer's nonlinearity)",
            self.many_body,
        )
        _require(
            _is_number(self.avg_num_neighbors) and self.avg_num_neighbors > 0,
            "avg_num_neighbors",
            "a positive number taken from the training data (equimol.models.average_num_neighbors)",
            self.avg_num_neighbors,
        )
        _require(_is_int(self.seed), "seed", "an int", self.seed)
        _require(
            self.pair_repulsion in PAIR_REPULSIONS, "pair_repulsion", f"one of {PAIR_REPULSIONS}", self.pair_repulsion
        )
        for key in ("zbl_inner", "zbl_outer"):
            value = getattr(self, key)
            _require(value is None or (_is_number(value) and value >= 0), key, "a number >= 0 (Å) or null", value)
        if self.zbl_inner is not None and self.zbl_outer is not None:
            _require(self.zbl_inner < self.zbl_outer, "zbl_inner", f"< zbl_outer={self.zbl_outer}", self.zbl_inner)
        for key in ("zbl_inner_fraction", "zbl_outer_fraction"):
            value = getattr(self, key)
            _require(_is_number(value) and value > 0, key, "a number > 0", value)
        _require(
            self.zbl_inner_fraction < self.zbl_outer_fraction,
            "zbl_inner_fraction",
            f"< zbl_outer_fraction={self.zbl_outer_fraction}",
            self.zbl_inner_fraction,
        )
        self._check_dispersion()
        if self.zbl_outer is not None:
            _require(
                self.zbl_outer <= self.radial_cutoff,
                "zbl_outer",
                f"<= radial_cutoff={self.radial_cutoff} (the switch acts on radius-graph edges)",
                self.zbl_outer,
            )
        resolve_dtype(self.dtype)
        _require(
            str(self.dtype).removeprefix("torch.") in ("float32", "float64"),
            "dtype",
            "'float32' or 'float64'",
            self.dtype,
        )

    def _check_dispersion(self) -> None:
        """``dispersion``: null or ``{kind: d3, xc, damping, ...}`` (:func:`equimol.nn.dispersion.check_options`)."""
        if self.dispersion is None:
            return
        from equimol.nn.dispersion import check_options

        try:
            self.dispersion = check_options(self.dispersion)
        except ValueError as error:
            raise ValueError(f"model config key 'dispersion': {error}") from error

    def _check_backend(self) -> None:
        """``tp_backend`` against the TP registry (:func:`equimol.tp.get_backend`): the one place it is checked."""
        from equimol.tp import get_backend

        try:
            get_backend(self.tp_backend)
        except ValueError as error:
            raise ValueError(f"model.tp_backend={self.tp_backend!r}: {error}") from error

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    def per_species(self, key: str, default: float) -> torch.Tensor:
        """``[num_species]`` float64 values of a number-or-mapping key (``e0s``, ``energy_shift``, ``energy_scale``)."""
        value = getattr(self, key)
        if value is None:
            return torch.full((len(self.species),), float(default), dtype=torch.float64)
        if _is_number(value):
            return torch.full((len(self.species),), float(value), dtype=torch.float64)
        _require(isinstance(value, dict), key, "a number or a mapping from species to numbers", value)
        by_number = {}
        for name, number in value.items():
            (atomic_number,) = parse_species([int(name) if isinstance(name, str) and name.isdigit() else name])
            _require(_is_number(number), f"{key}[{name}]", "a number (eV)", number)
            by_number[atomic_number] = float(number)
        missing = [z for z in self.species if z not in by_number]
        extra = sorted(set(by_number) - set(self.species))
        if missing or extra:
            raise ValueError(
                f"model config key {key!r} must give exactly the species {self.species}; "
                f"missing {missing}, extra {extra}"
            )
        return torch.tensor([by_number[z] for z in self.species], dtype=torch.float64)

    def to_dict(self) -> dict:
        """Plain mapping that :meth:`from_dict` reads back (for checkpoints)."""
        return dataclasses.asdict(self)
