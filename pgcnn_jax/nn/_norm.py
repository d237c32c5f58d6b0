"""Mask-aware normalisation of group features (REFERENCE 3.7, DESIGN 4).

Statistics count valid group slots only; invalid slots stay exactly zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.nn._features import GroupFeatures, broadcast_mask


def _channel(v) -> jax.Array:
    """``[C]`` -> ``[1, 1, 1, 1, C]``."""
    return v[...].reshape(1, 1, 1, 1, -1)


def _masked_moments(v: jax.Array, m: jax.Array, axes: tuple[int, ...]):
    count = jnp.maximum(jnp.sum(jnp.broadcast_to(m, v.shape), axis=axes, keepdims=True), 1.0)
    mean = jnp.sum(v * m, axis=axes, keepdims=True) / count
    var = jnp.sum(jnp.square(v - mean) * m, axis=axes, keepdims=True) / count
    return mean, var, count


def layer_norm_nhw(h: GroupFeatures, eps: float = 1e-5) -> GroupFeatures:
    """Parameter-free norm over ``(N, H, W)`` per (sample, channel) (the CKResNet in-block norm,
    REFERENCE 3.7), counting valid slots only."""
    m = broadcast_mask(h.mask)
    mean, var, _ = _masked_moments(h.values, m, (1, 2, 3))
    return h.replace_values((h.values - mean) * jax.lax.rsqrt(var + eps) * m)


class GroupLayerNorm(nnx.Module):
    """``GroupNorm(1 group)`` on group features: per-sample statistics over ``(H, W, N, C)``
    (valid slots), per-channel affine; the reference's ``net.norm="LayerNorm"`` (eps 1e-12)."""

    def __init__(self, num_features: int, *, epsilon: float = 1e-12, rngs: nnx.Rngs | None = None):
        self.epsilon = epsilon
        self.scale = nnx.Param(jnp.ones((num_features,)))
        self.bias = nnx.Param(jnp.zeros((num_features,)))

    def __call__(self, h: GroupFeatures) -> GroupFeatures:
        m = broadcast_mask(h.mask)
        mean, var, _ = _masked_moments(h.values, m, (1, 2, 3, 4))
        y = (h.values - mean) * jax.lax.rsqrt(var + self.epsilon)
        return h.replace_values((y * _channel(self.scale) + _channel(self.bias)) * m)


class GroupBatchNorm(nnx.Module):
    """``BatchNorm3d`` on group features: per-channel statistics over ``(B, H, W, N)`` valid
    slots, affine, running averages (PyTorch semantics: momentum 0.1, unbiased running var)
    used when ``use_running_average`` (set by ``model.eval()``)."""

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.1,
        epsilon: float = 1e-5,
        rngs: nnx.Rngs | None = None,
    ):
        self.momentum, self.epsilon = momentum, epsilon
        self.use_running_average = False
        self.scale = nnx.Param(jnp.ones((num_features,)))
        self.bias = nnx.Param(jnp.zeros((num_features,)))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,)))
        self.var = nnx.BatchStat(jnp.ones((num_features,)))

    def __call__(self, h: GroupFeatures) -> GroupFeatures:
        m = broadcast_mask(h.mask)
        if self.use_running_average:
            mean, var = _channel(self.mean), _channel(self.var)
        else:
            mean, var, count = _masked_moments(h.values, m, (0, 1, 2, 3))
            unbiased = (var * count / jnp.maximum(count - 1.0, 1.0)).reshape(-1)
            mom = self.momentum
            batch_mean = jax.lax.stop_gradient(mean.reshape(-1))
            self.mean[...] = (1 - mom) * self.mean[...] + mom * batch_mean
            self.var[...] = (1 - mom) * self.var[...] + mom * jax.lax.stop_gradient(unbiased)
        y = (h.values - mean) * jax.lax.rsqrt(var + self.epsilon)
        return h.replace_values((y * _channel(self.scale) + _channel(self.bias)) * m)
