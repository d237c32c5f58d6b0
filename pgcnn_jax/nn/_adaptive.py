"""Adaptive execution of partial layers (DESIGN 4): the element counts ``N'`` read on the host.

A partial :class:`~pgcnn_jax.nn.GroupConv` with a learned ``theta`` keeps
``N' = min(ceil(R |theta|), R)`` rotations (SE2: ``N' = R'``; E2: ``N' = 2 R'`` slots, the
``R'`` mirrored copies kept masked inside when the mirror does not fire, with the reference's
signed count). Adaptive execution runs such a layer on exactly ``N'`` slots: the count is a
static attribute (``active_elements``) of the layer, so a model's ``nnx.split`` graphdef changes
with the sizes and a step jitted over it compiles once per tuple of sizes (a cache keyed on the
graphdef). Layers whose count is random per step (deterministic ``keep`` sampling, the
mirror-only group) stay masked (``None``).

A training loop calls :func:`update_adaptive` once per step, before the step::

    changed = pg.nn.update_adaptive(model)   # host read of every theta (one transfer)
    if changed:
        graphdef, state = nnx.split(...)      # a new graphdef: the step compiles (once)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from pgcnn_jax.nn._partial import PartialGroupLayer, distribution_values, partial_layers

__all__ = ["active_elements", "adaptive_sizes", "set_active_elements", "update_adaptive"]


def _partial_convs(model: nnx.Module) -> list[tuple[str, PartialGroupLayer]]:
    """``(name, layer)`` of every partial layer of ``model`` in graph order
    (:func:`~pgcnn_jax.nn.partial_layers`)."""
    return partial_layers(model)


def _host_params(layer: PartialGroupLayer) -> dict:
    return distribution_values(layer)


def _is_adaptive(layer: PartialGroupLayer) -> bool:
    """Whether the layer's element count is a function of its parameters (e.g. a learned
    ``theta``), i.e. the same for every sample of a step
    (:meth:`~pgcnn_jax.groups.Group.adaptive_count` is not ``None``)."""
    return layer.group.adaptive_count(layer.num_elements, _host_params(layer)) is not None


def adaptive_sizes(model: nnx.Module) -> tuple[int | None, ...]:
    """The element counts adaptive execution uses at the current parameters, one per partial
    :class:`GroupConv` of ``model`` in graph order: ``N'`` for layers with a learned
    ``theta``, ``None`` for those that stay masked (``keep`` sampling, mirror-only). All
    distribution parameters come to the host in one transfer. Empty for models without
    partial layers.

    Raises ``ValueError`` for a non-finite ``theta``.
    """
    layers = [layer for _, layer in _partial_convs(model)]
    params = jax.device_get([_host_params(layer) for layer in layers])
    return tuple(
        layer.group.adaptive_count(layer.num_elements, p)
        for layer, p in zip(layers, params, strict=True)
    )


def active_elements(model: nnx.Module) -> tuple[int | None, ...]:
    """The ``active_elements`` every partial :class:`GroupConv` of ``model`` runs with now
    (graph order; ``None`` = masked)."""
    return tuple(layer.active_elements for _, layer in _partial_convs(model))


def set_active_elements(model: nnx.Module, sizes: Sequence[int | None] | None) -> None:
    """Sets the slot counts of the partial layers (graph order, as :func:`adaptive_sizes`);
    ``None`` for the whole model (or one entry) is masked execution.

    Raises ``ValueError`` for a wrong number of sizes, a size outside ``[1, N]`` or a size for
    a layer whose count is random per step (it must stay masked).
    """
    layers = _partial_convs(model)
    if sizes is None:
        sizes = (None,) * len(layers)
    sizes = tuple(sizes)
    if len(sizes) != len(layers):
        raise ValueError(
            f"got {len(sizes)} sizes {sizes} for the {len(layers)} partial layers of "
            f"{type(model).__name__}"
        )
    for (name, layer), size in zip(layers, sizes, strict=True):
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int | np.integer):
            raise ValueError(f"size of partial layer {name!r} must be an int or None, got {size!r}")
        if not 1 <= size <= layer.num_elements:
            raise ValueError(
                f"size {size} of partial layer {name!r} is outside [1, {layer.num_elements}]"
            )
        if not _is_adaptive(layer):
            raise ValueError(
                f"partial layer {name!r} samples a random number of elements per step (no "
                f"theta): it runs masked, its size must be None, got {size}"
            )
    for (_, layer), size in zip(layers, sizes, strict=True):
        layer.active_elements = None if size is None else int(size)


def update_adaptive(model: nnx.Module) -> bool:
    """Sets every partial layer's ``active_elements`` to :func:`adaptive_sizes` (one host read
    of the thetas); returns whether any size changed (i.e. a step jitted over the model's
    graphdef compiles anew). Call it before every step of an adaptive run."""
    sizes = adaptive_sizes(model)
    if sizes == active_elements(model):
        return False
    set_active_elements(model, sizes)
    return True
