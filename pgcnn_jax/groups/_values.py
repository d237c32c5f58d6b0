"""The values of the group protocol: a partial layer's distribution (:class:`Distribution` of
:class:`DistributionSpec`), what it keeps (:class:`SubsetSummary`) and the settings a group
fixes (:class:`ImpliedSettings`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class DistributionSpec:
    """One learnable parameter of a group's partial distribution.

    Attributes:
      name: the attribute a layer stores it under (``"theta"``, ``"keep"``, ``"mirror"``,
        ...); the same name is the key of ``params`` in :meth:`Group.sample`.
      shape: its shape.
      init: its initial value (every entry).
      relaxed: whether it is sampled through a straight-through relaxed Bernoulli, i.e. the
        layer needs a Gumbel temperature schedule.
    """

    name: str
    shape: tuple[int, ...] = ()
    init: float = 1.0
    relaxed: bool = False

    def initial_value(self) -> jax.Array:
        return jnp.full(self.shape, self.init, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The learnable parameters of a partial layer's distribution over its group, as the group
    defines them (:meth:`Group.distribution`): a container of :class:`DistributionSpec`,
    iterable in the group's order (the order of the flat ``probs`` vector of the penalties).

    A layer stores each parameter under its spec's name (so its ``nnx`` path is
    ``.../<layer>/<name>``, e.g. ``blocks/0/conv1/theta``); nothing outside the group lists
    the names.
    """

    specs: tuple[DistributionSpec, ...] = ()

    def __post_init__(self):
        specs = tuple(self.specs)
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"distribution parameter names must be unique, got {names}")
        object.__setattr__(self, "specs", specs)

    def __iter__(self):
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    @property
    def relaxed(self) -> bool:
        """Whether any parameter is sampled through a relaxed Bernoulli (the layer then needs
        a Gumbel temperature schedule)."""
        return any(spec.relaxed for spec in self.specs)

    def initial_values(self) -> dict[str, jax.Array]:
        return {spec.name: spec.initial_value() for spec in self.specs}


@dataclasses.dataclass(frozen=True)
class SubsetSummary:
    """What a layer's distribution keeps at its current parameters (host values).

    Attributes:
      num_elements: elements ``N'`` kept (the most probable sampled subset's size).
      axes: every axis of the group with its kept count, its size and its width (e.g.
        ``{"rotation": {"kept": 4, "of": 8, "width": 0.5}}``): the learned width where the
        layer learns one, 1 for a full axis, ``None`` where the kept set is not an interval
        (per-element keep decisions); axes may add more (the rotation axis's
        ``interval_deg`` and ``keep_probs``). What metrics and figures report.
    """

    num_elements: int
    axes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def kept(self, axis: str) -> int:
        """The count kept on ``axis`` (1 for an axis the group does not have)."""
        return int(self.axes.get(axis, {}).get("kept", 1))


@dataclasses.dataclass(frozen=True)
class ImpliedSettings:
    """The layer settings a group fixes (:meth:`Group.implied_settings`); ``None`` fields are
    left to the user. The field names are the ones of
    :class:`~pgcnn_jax.models.ModelConfig`."""

    num_elements: int | None = None
    sampling: str | None = None
    partial: bool | None = None
    sample_per_layer: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fixed settings by field name (the ``None`` ones left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


def host_sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
