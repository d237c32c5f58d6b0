"""Differentiable bilinear resampling of images by group elements (Augerino).

The implementation is the groups' one (:mod:`pgcnn_jax.groups._action`, DESIGN: one action
on images used by models, testing, analysis and data); these are the models' entry points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgcnn_jax.groups import Group, get_group, resample

__all__ = ["resample", "rotate_images", "transform_images"]


def transform_images(
    x: jax.typing.ArrayLike, group: Group | str, elements: jax.typing.ArrayLike
) -> jax.Array:
    """``L_g x`` for every element: ``x [B, H, W, C]``, ``elements [M, d]`` ->
    ``[M, B, H, W, C]`` (bilinear, zero padding, differentiable in the elements;
    :meth:`pgcnn_jax.groups.Group.transform_images`)."""
    return get_group(group).transform_images(x, elements)


def rotate_images(x: jax.typing.ArrayLike, angles: jax.typing.ArrayLike) -> jax.Array:
    """Rotations by ``angles [M]`` (radians, the SE2 action): ``[B, H, W, C] ->
    [M, B, H, W, C]``."""
    angles = jnp.asarray(angles, jnp.float32).reshape(-1, 1)
    return transform_images(x, "se2", angles)
