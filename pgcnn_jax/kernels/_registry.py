"""Kernel nets by name: :func:`register_kernel_net` and what a net's factory is given.

A kernel net is a factory registered under a name, with a frozen options dataclass holding
the net's own settings (SIREN's ``omega_0``, an MFN's ``input_scale``, ...). A
:class:`~pgcnn_jax.kernels.KernelSpec` names the net and carries its options; the spec calls
the factory as::

    factory(in_features, out_features, *, hidden, layers, options, factor, rngs)

returning an ``nnx.Module`` that maps ``[..., in_features] -> [..., out_features]`` point-wise
(it may also take a validity ``mask`` as second argument when it declares
``reduces_over_points``). ``factor`` is ``None`` for a net on its own, or a
:class:`FactorInit` for a factor of a separable kernel initialised to match the joint net
(:data:`~pgcnn_jax.kernels.FACTOR_INITS`); each net decides what it takes from it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

__all__ = [
    "FactorInit",
    "KernelNetEntry",
    "NoOptions",
    "check_positive",
    "kernel_net_entry",
    "register_kernel_net",
    "registered_kernel_nets",
]


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a kernel net without settings of its own."""


@dataclasses.dataclass(frozen=True)
class FactorInit:
    """How a factor of a separable kernel is initialised to match the joint net.

    Attributes:
      joint_inputs: the joint net's input size ``2 + d``: the fan-in of the factor's first
        layer bound (so that it keeps the joint net's frequency spectrum on its coordinates).
      absent_inputs: how many of the joint net's inputs the factor does not see (a net may
        draw its first-layer phases as their contribution).
      unit_output: start the factor's output at unit scale (the spatial factor ``psi_S``).
    """

    joint_inputs: int
    absent_inputs: int
    unit_output: bool


@dataclasses.dataclass(frozen=True)
class KernelNetEntry:
    """A registered kernel net: its ``factory`` (see the module docstring), its ``options``
    class, the fewest ``layers`` it takes and whether its output at one point depends on the
    other points evaluated with it (BatchNorm over the points: renderers pass a ``mask``, and
    every example's kernels are rendered together)."""

    name: str
    factory: Callable[..., nnx.Module]
    options: type = NoOptions
    min_layers: int = 2
    reduces_over_points: bool = False

    def make_options(self, options: Any) -> Any:
        """``options`` as this net's options value: ``None`` (the defaults), a mapping of
        settings, or a value of :attr:`options`; ``ValueError`` naming a wrong one."""
        if isinstance(options, self.options):
            return options
        if options is None:
            return self.options()
        if isinstance(options, Mapping):
            unknown = sorted(set(options) - set(self.setting_names))
            if unknown:
                raise ValueError(
                    f"kernel net {self.name!r} has no setting(s) {unknown}; its settings: "
                    f"{list(self.setting_names)}"
                )
            return self.options(**options)
        raise ValueError(
            f"options of kernel net {self.name!r} must be a {self.options.__name__} or a "
            f"mapping, got {options!r}"
        )

    @property
    def setting_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))


_REGISTRY: dict[str, KernelNetEntry] = {}


def register_kernel_net(
    name: str,
    factory: Callable[..., nnx.Module],
    *,
    options: type = NoOptions,
    min_layers: int = 2,
    reduces_over_points: bool = False,
) -> None:
    """Registers ``factory`` as the kernel net ``name`` (see :class:`KernelNetEntry`);
    ``options`` is a frozen dataclass of the net's own settings, given to the factory as
    ``options=``. ``ValueError`` if ``name`` is taken."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a kernel net name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"kernel net {name!r} is already registered")
    if not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):
        raise ValueError(f"options of kernel net {name!r} must be a frozen dataclass")
    _REGISTRY[name] = KernelNetEntry(name, factory, options, min_layers, reduces_over_points)


def registered_kernel_nets() -> tuple[str, ...]:
    """Names of the registered kernel nets, in registration order."""
    return tuple(_REGISTRY)


def kernel_net_entry(name: str) -> KernelNetEntry:
    """The registered kernel net ``name``; ``ValueError`` listing the known ones."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown kernel net {name!r}; expected one of {registered_kernel_nets()}")
    return _REGISTRY[name]


def check_positive(owner: str, name: str, value) -> None:
    """``ValueError`` unless ``value`` is a finite real number ``> 0``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a finite number > 0, got {value!r}")
