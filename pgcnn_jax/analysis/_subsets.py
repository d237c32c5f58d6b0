"""The learned subset of the group, layer by layer (paper Figures 5 and 6)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pgcnn_jax.analysis._record import conv_layers, record_features
from pgcnn_jax.nn import PartialGroupLayer, distribution_values


@dataclasses.dataclass(frozen=True)
class LayerSubset:
    """What one layer keeps of its group.

    Attributes:
      name: the layer's path in the model.
      group: group name.
      partial: whether the layer learns its subset.
      num_elements: slots ``N`` of the layer.
      kept_elements: elements ``N'`` kept at the current parameters (the most probable
        sampled subset's size, :meth:`pgcnn_jax.groups.Group.summarize`).
      axes: every axis of the group with the count kept, of how many, and its learned width
        (and what the group adds, e.g. the rotation axis's ``interval_deg`` and
        ``keep_probs``; :class:`pgcnn_jax.groups.SubsetSummary`).
    """

    name: str
    group: str
    partial: bool
    num_elements: int
    kept_elements: int
    axes: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _subset(name: str, layer) -> LayerSubset:
    g, n = layer.group, layer.num_elements
    partial = isinstance(layer, PartialGroupLayer) and layer.partial
    params = {}
    if partial:
        params = {k: np.asarray(v) for k, v in jax.device_get(distribution_values(layer)).items()}
    summary = g.summarize(n, params)
    return LayerSubset(
        name=name,
        group=g.name,
        partial=partial,
        num_elements=n,
        kept_elements=summary.num_elements,
        axes={k: dict(v) for k, v in summary.axes.items()},
    )


def learned_subsets(model: nnx.Module, x: jax.Array, *, seed: int = 0) -> list[LayerSubset]:
    """The subset every lifting / group conv of ``model`` keeps, in forward order.

    ``x`` (one small batch, ``[B, H, W, C]``) is traced once in eval mode (abstractly, with
    :func:`jax.eval_shape`: nothing is computed) to find the layers in the order they are
    applied; the model is left in eval mode.
    """
    model.eval()
    graphdef, state = nnx.split(model)
    order: list[str] = []

    def trace(state, x):
        m = nnx.merge(graphdef, state)
        with record_features(m) as feats:
            m(x, rngs=nnx.Rngs(sample=seed, dropout=seed))
        order[:] = list(feats)

    jax.eval_shape(trace, state, jnp.asarray(x))
    modules = dict(conv_layers(model))
    return [_subset(name, modules[name]) for name in order]
