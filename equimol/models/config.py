"""The typed model configuration: every hyperparameter of the potential in one place.

Built from the ``model:`` section of a YAML config with :meth:`ModelConfig.from_dict`; an unknown key
(at any level) raises a :class:`~equimol.errors.ConfigError` that names it. Each field's meaning, type,
default and limits are declared once, with :func:`equimol.config_fields.option`; the reference of every
key is :func:`equimol.config_schema.describe`. Keys follow MACE/NequIP usage::

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
      tp_options: {}               # passed to the backend, e.g. {cp_rank: 28} or {compile_edge_product: true} (gaunt)
      many_body: none              # none | cg | gaunt
      correlation: 3               # nu_max of the many-body block
      interaction: gated           # gated (TP, gate, residual) | product_basis (MACE: TP basis, then many-body)
      message_lmax: null           # product_basis: degree of the atomic basis A (default lmax; MACE's max_ell)
      self_connection: linear      # linear | species (one self-connection map per element, MACE's skip_tp)
      readout: final               # final (MLP on the last layer) | per_layer (plus a linear head per layer)
      scalar_first_layer: true     # product_basis: the first layer is built on the C x 0e embeddings only (MACE)
      avg_num_neighbors: 12.3      # from the training data (average_num_neighbors), or auto
      e0s: {H: -13.587, C: -1029.489}   # eV, every species, omitted (zeros), or auto
      energy_shift: 0.0            # eV, a number, a per-species mapping, or auto
      energy_scale: 1.0            # eV, a number, a per-species mapping, or auto
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

**"auto" keys.** ``avg_num_neighbors``, ``e0s``, ``energy_shift`` and ``energy_scale`` (:meth:`ModelConfig.auto_keys`:
their annotation includes :data:`~equimol.config_fields.Auto`) may be the string ``"auto"``: training fills them
from the training split's statistics in one step, :meth:`ModelConfig.resolve_auto`, which returns a new config
and refuses to leave an ``"auto"`` behind. :func:`equimol.models.build_model` builds only a resolved config.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from equimol.config_fields import AUTO, Auto, accepts_auto, build_section, check_section, check_value, option
from equimol.errors import ConfigError
from equimol.manybody import kinds as many_body_kinds
from equimol.nn.dispersion import DispersionConfig
from equimol.nn.embedding import parse_species
from equimol.nn.spe import SPE_MODES
from equimol.nn.species_linear import SELF_CONNECTIONS
from equimol.nn.zbl import INNER_FRACTION, OUTER_FRACTION
from equimol.utils.dtype import resolve_dtype

PAIR_REPULSIONS = ("none", "zbl")
INTERACTIONS = ("gated", "product_basis")
READOUTS = ("final", "per_layer")
DTYPES = ("float32", "float64")
DEFAULT_RADIAL_CUTOFF = 5.0  # Å; the data's graphs are built at the model's cutoff (one owner: the model)
# keys that the model sets on every product itself
RESERVED_TP_OPTIONS = ("dtype", "device", "internal_weights")


def _require(condition: bool, key: str, expected: str, value) -> None:
    if not condition:
        raise ConfigError(f"model.{key} must be {expected}, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _backend_names() -> tuple[str, ...]:
    from equimol.tp.interface import known_backends

    return tuple(known_backends())


@dataclass
class SPEConfig:
    """``model.spe``: stable positional encodings (:mod:`equimol.nn.spe`)."""

    enabled: bool = option(False, "add stable positional encodings of the graph to the node features")
    mode: str = option("chebyshev", "exact eigendecomposition or a Chebyshev filter approximation", choices=SPE_MODES)
    num_filters: int = option(4, "number of spectral filters", ge=1)
    polynomial_degree: int = option(8, "degree of the Chebyshev filter polynomials", ge=0, le=32)
    spectral_scale: float | None = option(None, "scale of the graph spectrum (null: 2 x avg_num_neighbors)", gt=0)
    hidden: int = option(16, "width of the encoding MLP", ge=1)

    @classmethod
    def from_dict(cls, values: dict | None) -> SPEConfig:
        return build_section(cls, values, "model.spe")


@dataclass
class ModelConfig:
    """All hyperparameters of :class:`equimol.models.potential.Potential` (see the module docstring)."""

    species: list = option(default_factory=list, doc="elements the model knows: atomic numbers or symbols")
    channels: int = option(32, "C: channels per irrep of the node features", ge=1)
    lmax: int = option(2, "largest degree of the node features (C x 0e + C x 1o + ... up to lmax)", ge=0, le=8)
    sh_lmax: int | None = option(None, "largest degree of the edge spherical harmonics (null: lmax)", ge=0, le=8)
    num_layers: int = option(2, "number of interaction layers", ge=1)
    num_radial_basis: int = option(8, "number of radial basis functions of an edge length", ge=1)
    radial_cutoff: float = option(
        DEFAULT_RADIAL_CUTOFF, "cutoff of the radius graph, Å (the data's graphs are built at it)", gt=0
    )
    envelope_exponent: int = option(5, "exponent of the polynomial cutoff envelope (>= 2: C^2 at the cutoff)", ge=2)
    radial_mlp_hidden: list[int] = option(
        default_factory=lambda: [64, 64], doc="hidden widths of the radial MLP that gives per-edge weights", ge=1
    )
    readout_hidden: int = option(16, "hidden width of the final readout MLP", ge=1)
    tp_backend: str = option("cg", "two-body message product (equimol.tp backend)", choices=_backend_names)
    tp_options: dict = option(
        default_factory=dict, doc="keyword options of the chosen backend's constructor (e.g. {cp_rank: 28})"
    )
    many_body: str = option(
        "none",
        "self-product of a node's features after message passing",
        choices=lambda: ("none", *many_body_kinds()),
    )
    correlation: int = option(3, "nu_max: number of factors of the many-body product", ge=1, le=4)
    interaction: str = option(
        "gated", "gated (TP, gate, residual) or product_basis (MACE: TP basis, then many-body)", choices=INTERACTIONS
    )
    message_lmax: int | None = option(
        None, "product_basis: largest degree of the atomic basis A (null: lmax; MACE's max_ell)", ge=0, le=8
    )
    self_connection: str = option(
        "linear", "linear, or species: one self-connection map per element (MACE's skip_tp)", choices=SELF_CONNECTIONS
    )
    readout: str = option(
        "final", "final: MLP on the last layer; per_layer: plus a linear head per layer", choices=READOUTS
    )
    scalar_first_layer: bool = option(True, "product_basis: the first layer sees the C x 0e embeddings only (MACE)")
    avg_num_neighbors: float | Auto | None = option(
        None, "average neighbours per atom, or auto: from the training data (message normalisation)", gt=0
    )
    e0s: dict | Auto | None = option(
        None, "isolated-atom energies per species, eV, or auto: the data's element references (null: zeros)"
    )
    energy_shift: float | dict | Auto = option(
        0.0, "energy shift, eV: a number, a per-species mapping, or auto: fitted to the training data"
    )
    energy_scale: float | dict | Auto = option(
        1.0, "energy scale, eV: a number, a per-species mapping, or auto: the training data's RMS force"
    )
    spe: SPEConfig = option(default_factory=SPEConfig, doc="stable positional encodings (equimol.nn.spe)")
    pair_repulsion: str = option(
        "none", "none, or zbl: screened nuclear repulsion (equimol.nn.zbl)", choices=PAIR_REPULSIONS
    )
    zbl_inner: float | None = option(None, "Å, ZBL switch start for every pair (null: zbl_inner_fraction)", ge=0)
    zbl_outer: float | None = option(None, "Å, ZBL switch end for every pair (null: zbl_outer_fraction)", ge=0)
    zbl_inner_fraction: float = option(
        INNER_FRACTION, "default ZBL switch start, fraction of the sum of the two covalent radii", gt=0
    )
    zbl_outer_fraction: float = option(
        OUTER_FRACTION, "default ZBL switch end, fraction of the sum of the two covalent radii", gt=0
    )
    dispersion: dict | None = option(
        None,
        "D3 dispersion through tad-dftd3, e.g. {kind: d3, xc: pbe, damping: bj} (null: none)",
        schema=DispersionConfig,
    )
    dtype: str = option("float64", "floating-point type of the parameters (set by trainer.precision)", choices=DTYPES)
    seed: int = option(0, "seed of the parameter initialisation", ge=0)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Validate the ``model:`` mapping (:func:`equimol.config_fields.check_section`); errors name the key."""
        if isinstance(values, dict) and "dtype" in values:
            values = {**values, "dtype": str(values["dtype"]).removeprefix("torch.")}
        config = build_section(cls, values, "model")
        config._validated = True
        return config

    @classmethod
    def auto_keys(cls) -> tuple[str, ...]:
        """The keys that may be ``"auto"`` (their annotation includes ``Auto``), in declaration order."""
        hints = typing.get_type_hints(cls)
        return tuple(f.name for f in dataclasses.fields(cls) if accepts_auto(hints[f.name]))

    def validate(self) -> None:
        """Check every value (types, choices, bounds) and the rules that tie keys together."""
        self.dtype = str(self.dtype).removeprefix("torch.")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["spe"] = dataclasses.asdict(self.spe) if dataclasses.is_dataclass(self.spe) else self.spe
        check_section(type(self), values, "model")
        if not isinstance(self.spe, SPEConfig):
            self.spe = SPEConfig.from_dict(self.spe)
        self.check_relations()
        self._validated = True

    @property
    def validated(self) -> bool:
        """Whether this instance came from :meth:`from_dict`, :meth:`validate` or :meth:`resolve_auto`."""
        return getattr(self, "_validated", False)

    def resolve_auto(self, values: Mapping) -> ModelConfig:
        """A new config with every ``"auto"`` key replaced by ``values[key]`` (statistics of the training data).

        Only the keys still ``"auto"`` are taken from ``values``; a key given as a number keeps it. Each
        value is checked like a YAML value of that key.

        Args:
            values: ``{key: value}`` for (at least) the keys of :meth:`unresolved`.

        Raises:
            ConfigError: a key of ``values`` that cannot be ``"auto"``, an ``"auto"`` key missing from
                ``values`` (or given as ``"auto"``), or a value of the wrong type or range (each names the key).
        """
        unknown = sorted(set(values) - set(self.auto_keys()))
        if unknown:
            raise ConfigError(f"model keys {unknown} are not filled from the data; auto keys: {list(self.auto_keys())}")
        hints = typing.get_type_hints(type(self))
        fields = {f.name: f for f in dataclasses.fields(self)}
        resolved = {}
        for key in self.unresolved():
            if key not in values or values[key] == AUTO:
                raise ConfigError(f"model.{key} is 'auto' but the training data gave no value for it")
            check_value("model", fields[key], hints[key], values[key])
            resolved[key] = values[key]
        config = dataclasses.replace(self, **resolved)
        config._validated = self.validated
        return config

    def check_relations(self) -> None:
        """The rules that tie keys together, the species list, the backend and its options, the dispersion."""
        try:
            self.species = parse_species(self.species)
        except ValueError as error:
            raise ConfigError(f"model.species: {error}") from error
        if self.sh_lmax is None:
            self.sh_lmax = self.lmax
        if self.message_lmax is None:
            self.message_lmax = self.lmax
        self._check_backend()
        _require(
            self.lmax <= self.message_lmax, "message_lmax", f"an int in lmax..8 (lmax = {self.lmax})", self.message_lmax
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
            _is_number(self.avg_num_neighbors) or self.avg_num_neighbors == AUTO,
            "avg_num_neighbors",
            "a positive number taken from the training data (equimol.models.average_num_neighbors)",
            self.avg_num_neighbors,
        )
        if self.zbl_inner is not None and self.zbl_outer is not None:
            _require(self.zbl_inner < self.zbl_outer, "zbl_inner", f"< zbl_outer={self.zbl_outer}", self.zbl_inner)
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

    def unresolved(self) -> list[str]:
        """The keys still ``"auto"`` (filled from the training data by ``equimol.train``'s statistics)."""
        return [key for key in self.auto_keys() if getattr(self, key) == AUTO]

    def _check_dispersion(self) -> None:
        """``dispersion``: null or ``{kind: d3, xc, damping, ...}`` (:func:`equimol.nn.dispersion.check_options`)."""
        if self.dispersion is None:
            return
        from equimol.nn.dispersion import check_options

        try:
            self.dispersion = check_options(self.dispersion)
        except ValueError as error:
            raise ConfigError(f"model.dispersion: {error}") from error

    def _check_backend(self) -> None:
        """``tp_backend`` against the TP registry and ``tp_options`` against that backend's constructor."""
        from equimol.tp import get_backend
        from equimol.tp.options import check_backend_options

        try:
            backend = get_backend(self.tp_backend)
        except ValueError as error:
            raise ConfigError(f"model.tp_backend={self.tp_backend!r}: {error}") from error
        reserved = sorted(set(RESERVED_TP_OPTIONS) & set(self.tp_options))
        _require(not reserved, "tp_options", f"free of {list(RESERVED_TP_OPTIONS)} (the model sets them)", reserved)
        self.tp_options = check_backend_options(backend, self.tp_options, "model.tp_options")

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
            raise ConfigError(
                f"model.{key} must give exactly the species {self.species}; missing {missing}, extra {extra}"
            )
        return torch.tensor([by_number[z] for z in self.species], dtype=torch.float64)

    def to_dict(self) -> dict:
        """Plain mapping that :meth:`from_dict` reads back (for checkpoints)."""
        return dataclasses.asdict(self)
