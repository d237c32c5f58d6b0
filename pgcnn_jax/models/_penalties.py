"""Regularisers and model inspection: monotonic decay, kernel norms, partial layers, counts
(REFERENCE 4.5, 5.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pgcnn_jax.models._ckresnet import CKResNet
from pgcnn_jax.nn import KernelNorm, PartialGroupLayer
from pgcnn_jax.nn import partial_layers as nn_partial_layers


def partial_layers(model: nnx.Module) -> list[tuple[str, PartialGroupLayer]]:
    """``(name, layer)`` of every partial layer (:class:`~pgcnn_jax.nn.PartialGroupLayer`
    marker, found with ``nnx.iter_modules``), in graph order (CKResNet: ``block1.conv1,
    block1.conv2, ..., final_conv``; GCNN: ``block1.conv, ...``; names by
    :func:`pgcnn_jax.nn.layer_name`).

    Log per layer ``theta``, the mirror probability ``sigmoid(2 mirror)`` and ``N'``
    (``layer.sample``'s mask sum). Empty for full, T(2) and Augerino models.
    """
    return nn_partial_layers(model)


def _distribution_vector(conv: PartialGroupLayer) -> jax.Array:
    """The layer's distribution parameters flattened in the group's order
    (:meth:`~pgcnn_jax.groups.Group.distribution`; SE2 / E2: ``[theta?, keep..., mirror?]``,
    the reference's ``probs`` layout)."""
    parts = [p[...].reshape(-1) for p in conv.distribution().values()]
    return jnp.concatenate(parts) if parts else jnp.zeros((0,))


def monotonic_penalty(model: nnx.Module, weight: float) -> jax.Array:
    """Monotonic decay loss (REFERENCE 4.5):

    .. math:: \\lambda \\sum_l \\sum_c \\mathrm{relu}(p_{l+1, c} - p_{l, c})

    over consecutive partial group convs of a :class:`CKResNet` in registration order and
    the components ``c`` of their distribution (``theta``; for E2 also the mirror parameter).
    0 for a model that is not partial. Raises ``ValueError`` for other model types.
    """
    if not isinstance(model, CKResNet):
        raise ValueError(
            f"monotonic_penalty is defined for CKResNet only, got {type(model).__name__}"
        )
    layers = partial_layers(model)
    total = jnp.zeros((), jnp.float32)
    for (_, a), (_, b) in zip(layers[:-1], layers[1:], strict=True):
        total = total + jnp.sum(jax.nn.relu(_distribution_vector(b) - _distribution_vector(a)))
    return weight * total


def kernel_norm_penalty(model: nnx.Module) -> jax.Array:
    """``sum_l (||K_l||_2 + ||b_l||_2)`` over the kernels every conv rendered in its last call
    (REFERENCE 5.1). Call it after the forward pass inside the loss function to differentiate
    it; multiply by ``weight_decay`` yourself."""
    leaves = jax.tree.leaves(nnx.state(model, KernelNorm))
    return sum((jnp.asarray(v) for v in leaves), jnp.zeros((), jnp.float32))


def count_params(model: nnx.Module) -> int:
    """Number of scalars in ``nnx.Param`` leaves (distribution / augmentation parameters
    included; running statistics, Gumbel counters and kernel norms excluded). Works on
    abstract models from ``nnx.eval_shape`` too."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return int(sum(int(np.prod(v.shape)) for v in leaves))
