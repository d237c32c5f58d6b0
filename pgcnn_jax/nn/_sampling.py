"""The sampling settings of a conv as one frozen value (:class:`SamplingSpec`)."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from pgcnn_jax.groups import SAMPLING_METHODS

#: How a conv with per-example elements (``S = B``) renders its ``B`` kernels:
#: ``"chunked"`` (default) renders and convolves a few examples at a time
#: (:func:`~pgcnn_jax.nn.conv2d_per_example`), ``"batched"`` renders all ``B`` kernels first
#: (``B`` full kernels in memory; also used by kernel nets with BatchNorm, whose statistics span
#: every example's kernel).
PER_EXAMPLE_RENDERS = ("chunked", "batched")

#: The keywords a conv constructor still takes beside ``sampling`` (the pre-spec spelling)
#: and the :class:`SamplingSpec` field each sets.
SAMPLING_KEYWORDS = {
    "partial": "partial",
    "sample_per_layer": "per_layer",
    "sample_per_batch_element": "per_example",
    "per_example_render": "per_example_render",
    "gumbel_horizon": "gumbel_horizon",
    "gumbel_temperatures": "gumbel_temperatures",
}


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """How a conv draws its group elements (REFERENCE 1.6-1.7); hashable, a static attribute
    of the layer.

    Attributes:
      method: ``"random"`` (a regular grid with a fresh random offset per forward; with
        ``partial``, the learned interval) or ``"deterministic"`` (the grid; with ``partial``,
        one keep decision per non-identity grid element) (:data:`SAMPLING_METHODS`).
      partial: learn a distribution over the group (group convs only; a lifting conv always
        samples the whole group and refuses ``partial=True``).
      per_layer: a group conv draws its own output elements (random sampling); ``False``
        reuses its input elements.
      per_example: ``S = B`` independent element sets, one per batch element (random
        sampling only).
      per_example_render: how ``S = B`` kernels are rendered (:data:`PER_EXAMPLE_RENDERS`).
      gumbel_horizon: the relaxed-Bernoulli temperature horizon a partial layer starts with
        (optimiser steps). The layer holds it as traced state
        (:class:`~pgcnn_jax.nn.GumbelHorizon`), so it is left out of ``==`` and ``hash``.
      gumbel_temperatures: ``(initial, final)`` relaxed-Bernoulli temperatures.

    Example:
      >>> SamplingSpec("random", partial=True).replace(per_example=True).per_example
      True
    """

    method: str = "random"
    partial: bool = False
    per_layer: bool = True
    per_example: bool = False
    per_example_render: str = "chunked"
    gumbel_horizon: int = dataclasses.field(default=100_000, compare=False)
    gumbel_temperatures: tuple[float, float] = (0.5, 1e-4)

    def __post_init__(self):
        if self.method not in SAMPLING_METHODS:
            raise ValueError(
                f"unknown sampling {self.method!r}; expected one of {SAMPLING_METHODS}"
            )
        for name in ("partial", "per_layer", "per_example"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.per_example and self.method != "random":
            raise ValueError("sample_per_batch_element=True requires sampling='random'")
        if self.per_example_render not in PER_EXAMPLE_RENDERS:
            raise ValueError(
                f"unknown per_example_render {self.per_example_render!r}; expected one of "
                f"{PER_EXAMPLE_RENDERS}"
            )
        h = self.gumbel_horizon
        if isinstance(h, bool) or not isinstance(h, numbers.Integral):
            raise ValueError(f"gumbel_horizon must be an int, got {h!r}")
        if h < 1:
            raise ValueError(f"gumbel_horizon must be >= 1, got {h}")
        temps = tuple(self.gumbel_temperatures)
        if len(temps) != 2 or not all(isinstance(t, numbers.Real) and t > 0 for t in temps):
            raise ValueError(f"gumbel_temperatures must be two positive numbers, got {temps!r}")
        object.__setattr__(self, "gumbel_temperatures", tuple(float(t) for t in temps))

    def replace(self, **changes: Any) -> SamplingSpec:
        return dataclasses.replace(self, **changes)

    @property
    def moves(self) -> bool:
        """Whether a group conv with this sampling draws its own output elements (may move
        off its input grid)."""
        return self.partial or (self.per_layer and self.method == "random")


def as_sampling_spec(sampling: SamplingSpec | str, **keywords: Any) -> SamplingSpec:
    """``sampling`` as a spec: a method name means ``SamplingSpec(method=name)``; the
    pre-spec keywords (:data:`SAMPLING_KEYWORDS`: ``partial``, ``sample_per_layer``,
    ``sample_per_batch_element``, ``gumbel_horizon``, ...) replace its fields. ``TypeError``
    for any other keyword."""
    unknown = sorted(set(keywords) - set(SAMPLING_KEYWORDS))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {unknown}; sampling settings are "
            f"{sorted(SAMPLING_KEYWORDS)} (or a SamplingSpec as sampling=...)"
        )
    if isinstance(sampling, str):
        sampling = SamplingSpec(method=sampling)
    elif not isinstance(sampling, SamplingSpec):
        raise ValueError(f"sampling must be a SamplingSpec or a method name, got {sampling!r}")
    if not keywords:
        return sampling
    return sampling.replace(**{SAMPLING_KEYWORDS[k]: v for k, v in keywords.items()})
