r"""The tensor-product interface every backend implements.

A backend computes the channel-wise ("uvu") tensor product used by message-passing potentials:

.. math::

    z_{n,u,c_3} = \sum_{\text{paths } (l_1, l_2 \to l_3)} w_{n,\cdot}\;
        \sum_{c_1, c_2} T^{(l_1 l_2 l_3)}_{c_1 c_2 c_3}\, x_{n,u,c_1}\, y_{n,c_2}

with ``x`` = ``x1`` ``[N, irreps_in1.dim]`` (``C`` channels ``u`` per irrep), ``y`` = ``x2``
``[N, irreps_in2.dim]`` (one copy per irrep, typically edge spherical harmonics) and the result
``[N, irreps_out.dim]``. Paths that reach the same output irrep are summed, each with its weight.
The backends differ in the coupling ``T`` and in how the weights ``w`` enter:

========  =======================================================  ==================================
backend   coupling                                                 ``weight_numel``
========  =======================================================  ==================================
``cg``    exact Clebsch-Gordan (e3nn), every parity-allowed path    ``C * n_paths`` (per path, channel)
``gaunt`` Gaunt coefficients (``l1 + l2 + l3`` even, parity (-1)^l) ``C * (n1 + n2 + n_out)``
``cp``    rank-R CP decomposition of the stacked CG tensor          ``C`` (path-weight sharing)
``cueq``  the ``cg`` product run by cuEquivariance (optional extra)  ``C * n_paths`` (same as ``cg``)
========  =======================================================  ==================================

**Normalization (all backends).** Inputs are "component" normalized: every component of ``x1``
has unit variance, and ``x2`` holds component-normalized spherical harmonics (each component
has unit mean square over the sphere, e3nn ``normalization="component"``). Weights have unit
variance. Each output irrep is divided by the square root of its fan-in (the number of paths
reaching it, e3nn's ``path_normalization="element"``), so every output component has variance
of order one whichever backend is chosen; swapping the backend does not rescale activations.

**dtype.** Coefficients are built in float64 and cast to the module's dtype. Float64 copies are
kept, so ``.double()`` after construction in float32 restores float64-exact coefficients rather
than up-casting rounded ones. torch's global default dtype is never changed for the caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from equimol.errors import EquimolInputError
from equimol.tp.checks import check_product_inputs
from equimol.tp.factored import FactoredProduct, load_message_kernel
from equimol.tp.irreps import IrrepsLike, parse_irreps, uniform_multiplicity
from equimol.tp.message_passing import MessagePassing
from equimol.tp.paths import Path, allowed_paths
from equimol.utils.dtype import resolve_dtype
from equimol.utils.optional import import_optional, importable

_BACKENDS: dict[str, type[TensorProductBackend]] = {}


def register_backend(name: str):
    """Class decorator that registers a :class:`TensorProductBackend` subclass under ``name``."""

    def decorator(cls: type[TensorProductBackend]) -> type[TensorProductBackend]:
        if name in _BACKENDS and _BACKENDS[name] is not cls:
            raise ValueError(f"tensor-product backend {name!r} is already registered")
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return decorator


# Backends that need an optional package, imported on first use:
# name -> (module registering it, package it needs, pip extra that installs the package).
_OPTIONAL_BACKENDS: dict[str, tuple[str, str, str]] = {
    "cueq": ("equimol.tp.cueq", "cuequivariance_torch", "cueq"),
}


def available_backends() -> list[str]:
    """Names of the registered backends and of the optional ones whose package is installed, sorted."""
    optional = {name for name, (_, package, _) in _OPTIONAL_BACKENDS.items() if importable(package)}
    return sorted(set(_BACKENDS) | optional)


def known_backends() -> list[str]:
    """Names of the registered backends and of every optional one, installed or not, sorted."""
    return sorted(set(_BACKENDS) | set(_OPTIONAL_BACKENDS))


def get_backend(name: str) -> type[TensorProductBackend]:
    """Return the backend class registered as ``name``; ValueError listing the known ones if absent.

    An optional backend (``cueq``) is imported here on first use; without its package the
    ValueError names the pip extra that installs it.
    """
    if isinstance(name, str) and name in _OPTIONAL_BACKENDS and name not in _BACKENDS:
        import_optional(*_OPTIONAL_BACKENDS[name], f"tensor-product backend {name!r}")
    if not isinstance(name, str) or name not in _BACKENDS:
        raise EquimolInputError(
            f"unknown tensor-product backend {name!r}; available backends: {', '.join(available_backends())}"
        )
    return _BACKENDS[name]


def factored_backends() -> list[str]:
    """Registered backends that provide a factored form (:meth:`TensorProductBackend.factored_form`), sorted.

    Every fused message kernel (``kernel="triton"``) serves exactly these.
    """
    base = TensorProductBackend.factored_form
    return sorted(name for name, cls in _BACKENDS.items() if cls.factored_form is not base)


def TensorProduct(  # noqa: N802 - reads as the class it constructs
    irreps_in1: IrrepsLike,
    irreps_in2: IrrepsLike,
    irreps_out: IrrepsLike,
    backend: str = "cg",
    **options,
) -> TensorProductBackend:
    """Build the channel-wise tensor product ``irreps_in1 x irreps_in2 -> irreps_out``.

    Args:
        irreps_in1: node-feature irreps, ``C`` channels per irrep (e.g. ``"16x0e + 16x1o"``).
        irreps_in2: one copy of each irrep (e.g. edge spherical harmonics ``"0e + 1o + 2e"``).
        irreps_out: output irreps with the same ``C`` channels.
        backend: one of :func:`available_backends` (``"cg"``, ``"gaunt"``, ``"cp"``).
        **options: backend options. For all backends: ``internal_weights`` (keep a shared
            weight parameter, default True), ``dtype``, ``device``, ``kernel`` (``"torch"`` or
            ``"triton"``: the implementation of :meth:`~TensorProductBackend.message_passing`)
            and ``deterministic`` (kernels only: sorted segmented reduction instead of atomics).
            Backend-specific: e.g. ``strategy`` for ``gaunt``, ``cp_rank`` for ``cp``.

    Returns:
        The backend module; call it as ``tp(x1, x2, weight)``.

    Raises:
        ValueError: unknown backend, unparsable irreps, irreps the backend cannot serve, or an
            option the backend does not accept.
    """
    cls = get_backend(backend)
    accepted = _accepted_options(cls)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise EquimolInputError(
            f"backend {backend!r} does not accept option(s) {unknown}; accepted: {sorted(accepted)}"
        )
    return cls(irreps_in1, irreps_in2, irreps_out, **options)


def _accepted_options(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is nn.Module or not issubclass(klass, nn.Module):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return names


class TensorProductBackend(MessagePassing):
    """Base class of the backends: validation, weights, dtype handling; message passing from :class:`MessagePassing`.

    Subclasses take their own keyword-only options, pass ``**base_options`` on to this
    constructor (so options added here reach every backend), build their coefficients as float64
    buffers, set ``self.weight_numel``, call :meth:`_finish_construction` last, and implement
    :meth:`_product`.

    Args:
        irreps_in1, irreps_in2, irreps_out: the operands' and the output's irreps.
        internal_weights: keep one shared weight parameter (the model passes per-edge weights instead).
        dtype: dtype of the coefficients and weights.
        device: device of the coefficients and weights.
        kernel: implementation of :meth:`message_passing`, ``"torch"`` or a fused kernel such as ``"triton"``.
        deterministic: fused kernels only: a sorted segmented reduction instead of atomics.

    Attributes:
        irreps_in1, irreps_in2, irreps_out: parsed e3nn ``Irreps``.
        channels: ``C``, the common multiplicity of ``irreps_in1`` and ``irreps_out``.
        paths: the parity- and triangle-allowed :class:`~equimol.tp.paths.Path` list.
        weight_numel: number of weights per sample.
        weight: the shared weights ``[weight_numel]`` when ``internal_weights=True``, else None.
    """

    name: ClassVar[str] = "abstract"

    def __init__(
        self,
        irreps_in1: IrrepsLike,
        irreps_in2: IrrepsLike,
        irreps_out: IrrepsLike,
        *,
        internal_weights: bool = True,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        kernel: str = "torch",
        deterministic: bool = False,
    ) -> None:
        super().__init__()
        self.irreps_in1 = parse_irreps(irreps_in1, "irreps_in1")
        self.irreps_in2 = parse_irreps(irreps_in2, "irreps_in2")
        self.irreps_out = parse_irreps(irreps_out, "irreps_out")
        self.channels = uniform_multiplicity(self.irreps_in1, "irreps_in1")
        out_channels = uniform_multiplicity(self.irreps_out, "irreps_out")
        if out_channels != self.channels:
            raise ValueError(
                f"irreps_out={self.irreps_out} has {out_channels} channels but irreps_in1="
                f"{self.irreps_in1} has {self.channels}; the channel-wise (uvu) product keeps the "
                "channel count (mix channels with a linear layer before or after)"
            )
        if uniform_multiplicity(self.irreps_in2, "irreps_in2") != 1:
            raise ValueError(
                f"irreps_in2={self.irreps_in2} must hold one copy of each irrep (e.g. edge spherical "
                "harmonics '1x0e + 1x1o + 1x2e')"
            )
        self.paths: list[Path] = allowed_paths(self.irreps_in1, self.irreps_in2, self.irreps_out)
        self.internal_weights = internal_weights
        self.kernel = kernel
        self.deterministic = deterministic
        self._message_kernel = None if kernel == "torch" else load_message_kernel(kernel)
        self._dtype = resolve_dtype(dtype)
        self._device = torch.device(device) if device is not None else None
        self.weight_numel = 0
        self._float64_constants: dict[str, torch.Tensor] = {}

    # -- construction helpers ---------------------------------------------------------------

    def _unsupported(self, reason: str, alternative: str = "cg") -> ValueError:
        """A ValueError saying why this backend cannot serve the irreps and which backend can."""
        return ValueError(
            f"backend {self.name!r} cannot serve {self.irreps_in1} x {self.irreps_in2} -> "
            f"{self.irreps_out}: {reason}; use backend={alternative!r} instead"
        )

    def _resolve_choice(self, option: str, value: str, choices: tuple[str, ...], auto: Callable[[], str]) -> str:
        """``value`` of the constructor option ``option``, checked against ``choices``; ``"auto"`` becomes ``auto()``.

        Raises:
            ValueError: ``value`` is not in ``choices`` (the message names the option, the choices and the backend).
        """
        if value not in choices:
            raise ValueError(f"{option}={value!r} is not one of {choices} for backend {self.name!r}")
        return auto() if value == "auto" else value

    def _finish_construction(self) -> None:
        """Create the internal weights, remember float64 constants, move to dtype and device."""
        if self.internal_weights:
            self.weight = nn.Parameter(torch.empty(self.weight_numel, dtype=torch.float64))
            with torch.no_grad():
                self.reset_parameters()
        else:
            self.register_parameter("weight", None)
        self._float64_constants = {
            name: buffer.detach().clone()
            for name, buffer in self.named_buffers(remove_duplicate=False)
            if buffer.dtype in (torch.float64, torch.complex128)
        }
        self.to(dtype=self._dtype, device=self._device)
        if self._message_kernel is not None and self.factored_form() is None:
            raise EquimolInputError(
                f"kernel={self.kernel!r} runs backends with a factored form ({', '.join(factored_backends())}); "
                f"backend {self.name!r} has none: use kernel='torch'"
            )

    def reset_parameters(self) -> None:
        """Initialise the internal weights with unit variance (see the normalization convention)."""
        if self.weight is not None:
            nn.init.normal_(self.weight)

    def _apply(self, fn, recurse: bool = True):
        # Re-derive every constant from its float64 copy after a dtype or device change, so that
        # float32 -> float64 gives float64-exact coefficients instead of up-cast rounded ones.
        super()._apply(fn, recurse)
        for name, master in self._float64_constants.items():
            module_path, _, buffer_name = name.rpartition(".")
            owner = self.get_submodule(module_path) if module_path else self
            current = owner._buffers[buffer_name]
            owner._buffers[buffer_name] = master.to(device=current.device, dtype=current.dtype)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        # Every buffer of a backend is a constant rebuilt at construction (coefficients, factors, index maps);
        # only ``weight`` is learned. A model file written by another strategy or version of the backend holds
        # other constant buffers: ignore the stored ones and keep those this construction built.
        for key in [key for key in state_dict if key.startswith(prefix) and key != prefix + "weight"]:
            del state_dict[key]
        own = self.state_dict(prefix=prefix, keep_vars=True)
        state_dict.update({key: value for key, value in own.items() if key != prefix + "weight"})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    # -- the product ------------------------------------------------------------------------

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Channel-wise tensor product.

        Args:
            x1: ``[N, irreps_in1.dim]`` node features.
            x2: ``[N, irreps_in2.dim]`` edge attributes (one channel per irrep).
            weight: ``[N, weight_numel]`` per-sample weights, ``[weight_numel]`` shared weights,
                or None for the internal weights.

        Returns:
            ``[N, irreps_out.dim]``.
        """
        weight = self._check_inputs(x1, x2, weight)
        return self._product(x1, x2, weight)

    def _product(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Backend computation on validated inputs; ``weight`` is ``[N, weight_numel]``.

        By default :meth:`_product_in_layout` between the two permutations of :meth:`product_layout`.
        """
        into, back = self.product_layout()
        return self._product_in_layout(x1.index_select(1, into), x2, weight).index_select(1, back)

    def factored_form(self) -> FactoredProduct | None:
        """The product as factors, weight split and rank map (:mod:`equimol.tp.factored`), or None.

        A backend that returns one gets every fused message kernel (``kernel="triton"``) without
        further code. The factors may be in any dtype and device (kernels cast them); they must
        reproduce :meth:`forward` to round-off, with ``weight_split`` covering ``weight_numel``.
        """
        return None

    def _check_inputs(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """:func:`equimol.tp.checks.check_product_inputs`: ``[N, weight_numel]`` weights of checked inputs."""
        return check_product_inputs(self, x1, x2, weight)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, backend={self.name!r}, "
            f"weight_numel={self.weight_numel}, paths={len(self.paths)}"
        )


__all__ = [
    "TensorProduct",
    "TensorProductBackend",
    "available_backends",
    "factored_backends",
    "get_backend",
    "register_backend",
]
