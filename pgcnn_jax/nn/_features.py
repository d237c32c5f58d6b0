"""Features on a sampled subset of the group, travelling with their elements and mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class GroupFeatures:
    """A feature map on sampled group elements (a registered pytree).

    Attributes:
      values: ``[B, H, W, N, C]`` features; invalid slots are exactly zero.
      elements: ``[S, N, d]`` the sampled elements (``S`` = 1 or ``B``).
      mask: ``[S, N]`` 1 for valid slots, 0 for padding slots (all 1 when not partial).
    """

    values: jax.Array
    elements: jax.Array
    mask: jax.Array

    @property
    def num_elements(self) -> int:
        return self.values.shape[3]

    def replace_values(self, values: jax.Array) -> GroupFeatures:
        return self.replace(values=values)

    def valid_count(self) -> jax.Array:
        """``N'`` per sample row, ``[S]``."""
        return jnp.sum(self.mask, axis=-1)


def broadcast_mask(mask: jax.Array) -> jax.Array:
    """``[S, N]`` -> ``[S, 1, 1, N, 1]`` to multiply ``[B, H, W, N, C]`` values."""
    return mask[:, None, None, :, None]
