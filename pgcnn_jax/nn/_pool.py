"""Pooling over the group axis (mask-aware) and over space (REFERENCE 3.6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgcnn_jax.nn._features import GroupFeatures, broadcast_mask


def group_max_pool(h: GroupFeatures) -> jax.Array:
    """Max over valid group slots: ``[B, H, W, N, C] -> [B, H, W, C]``."""
    m = broadcast_mask(h.mask)
    return jnp.max(jnp.where(m > 0, h.values, -jnp.inf), axis=3)


def group_mean_pool(h: GroupFeatures) -> jax.Array:
    """Mean over valid group slots (divides by ``N'``): ``[B, H, W, N, C] -> [B, H, W, C]``."""
    m = broadcast_mask(h.mask)
    return jnp.sum(h.values * m, axis=3) / jnp.sum(m, axis=3)


def spatial_max_pool(h: GroupFeatures, window: int = 2) -> GroupFeatures:
    """``window x window`` spatial max-pool, stride ``window``, no padding (odd sizes floor),
    independently per (group slot, channel)."""
    v = h.values
    b, hh, ww, n, c = v.shape
    y = jax.lax.reduce_window(
        v, -jnp.inf, jax.lax.max, (1, window, window, 1, 1), (1, window, window, 1, 1), "VALID"
    )
    return h.replace_values(y)
