"""The learned subset of the group, layer by layer (paper Figures 5 and 6)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.analysis._record import conv_layers, record_features
from pgcnn_jax.groups import subset_size


@dataclasses.dataclass(frozen=True)
class LayerSubset:
    """What one layer keeps of its group.

    Attributes:
      name: the layer's path in the model.
      group: group name.
      partial: whether the layer learns its subset.
      theta: rotation half-width in units of pi (1 = all rotations); ``None`` for groups
        without rotations.
      interval_deg: ``(-180 theta, 180 theta)``, the rotations kept.
      mirror_prob: probability ``sigmoid(2 p)`` of including mirrored elements (1 for full
        layers of mirror groups, ``None`` for groups without mirrors).
      keep_probs: per grid element keep probabilities (deterministic partial layers).
      num_elements: slots ``N`` of the layer.
      num_rotations: rotations ``N'`` (SE2) or ``R'`` (E2) kept at the current parameters
        (:func:`pgcnn_jax.groups.subset_size`).
    """

    name: str
    group: str
    partial: bool
    theta: float | None
    interval_deg: tuple[float, float] | None
    mirror_prob: float | None
    keep_probs: tuple[float, ...] | None
    num_elements: int
    num_rotations: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _subset(name: str, layer) -> LayerSubset:
    g = layer.group
    n = layer.num_elements
    theta_param = getattr(layer, "theta", None)
    keep = getattr(layer, "keep", None)
    mirror = getattr(layer, "mirror", None)
    count, _ = subset_size(
        g,
        n,
        theta=None if theta_param is None else theta_param[...],
        keep=None if keep is None else keep[...],
        mirror=None if mirror is None else mirror[...],
    )
    theta = 1.0 if theta_param is None else float(theta_param[...])
    if not g.has_rotations:
        theta_out, interval = None, None
    else:
        theta_out, interval = theta, (-180.0 * abs(theta), 180.0 * abs(theta))
    mirror_prob = None
    if g.has_mirror:
        mirror_prob = 1.0 if mirror is None else float(jax.nn.sigmoid(2.0 * mirror[...]))
    keep_probs = None
    if keep is not None:
        keep_probs = tuple(float(p) for p in jax.nn.sigmoid(2.0 * keep[...]))
    return LayerSubset(
        name=name,
        group=g.name,
        partial=bool(getattr(layer, "partial", False)),
        theta=theta_out,
        interval_deg=interval,
        mirror_prob=mirror_prob,
        keep_probs=keep_probs,
        num_elements=n,
        num_rotations=count,
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
