"""Differentiable bilinear resampling of images by planar group elements (Augerino).

The action follows the library's convention (:mod:`pgcnn_jax.testing`): an element ``g``
maps an image ``x`` to ``(L_g x)(p) = x(A(g)^{-1} p)`` on centred ``(row, col)`` pixel
coordinates (centre ``((H - 1) / 2, (W - 1) / 2)``), so a rotation by 90 degrees reproduces
``transform_image`` exactly and the mirror ``(0, -1)`` reverses the columns.

Unlike the reference's ``affine_grid(align_corners=True)`` + ``grid_sample(align_corners=
False)`` pair (REFERENCE 4.4), there is no ``(W - 1) / W`` zoom and no half-pixel shift: angle
0 is exactly the identity. Out-of-image samples read zeros; gradients flow to the matrices
(hence to the angles) through the bilinear weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgcnn_jax.groups import Group, get_group


@jax.jit
def _bilinear(x: jax.Array, matrices: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    m = matrices.shape[0]
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)
    rows, cols = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    p = jnp.stack([rows, cols], axis=-1).astype(jnp.float32) - centre.reshape(1, 1, 2)
    q = jnp.einsum("mab,yxb->myxa", matrices, p) + centre.reshape(1, 1, 1, 2)  # [M, H, W, 2]
    q0, q1 = q[..., 0], q[..., 1]
    i0 = jnp.floor(jax.lax.stop_gradient(q0))
    j0 = jnp.floor(jax.lax.stop_gradient(q1))
    di, dj = q0 - i0, q1 - j0
    out = jnp.zeros((b, m, h, w, c), x.dtype)
    for oi, oj, weight in (
        (0, 0, (1 - di) * (1 - dj)),
        (1, 0, di * (1 - dj)),
        (0, 1, (1 - di) * dj),
        (1, 1, di * dj),
    ):
        ii = (i0 + oi).astype(jnp.int32)
        jj = (j0 + oj).astype(jnp.int32)
        inside = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
        vals = x[:, jnp.clip(ii, 0, h - 1), jnp.clip(jj, 0, w - 1), :]  # [B, M, H, W, C]
        weight = jnp.where(inside, weight, 0.0).astype(x.dtype)
        out = out + vals * weight.reshape(1, m, h, w, 1)
    return out.transpose(1, 0, 2, 3, 4)


def resample(x: jax.typing.ArrayLike, matrices: jax.typing.ArrayLike) -> jax.Array:
    """Bilinear ``y_m(p) = x(B_m p)`` about the image centre, zero padding.

    Args:
      x: images ``[B, H, W, C]``.
      matrices: ``[M, 2, 2]`` maps ``B_m`` from output to input centred ``(row, col)``
        coordinates (``A(g)^{-1}`` for the action of ``g``).

    Returns:
      ``[M, B, H, W, C]``.
    """
    x = jnp.asarray(x)
    matrices = jnp.asarray(matrices, jnp.float32)
    if x.ndim != 4:
        raise ValueError(f"resample expects images [B, H, W, C], got shape {x.shape}")
    if matrices.ndim != 3 or matrices.shape[1:] != (2, 2):
        raise ValueError(f"resample expects matrices [M, 2, 2], got shape {matrices.shape}")
    return _bilinear(x, matrices)


def transform_images(
    x: jax.typing.ArrayLike, group: Group | str, elements: jax.typing.ArrayLike
) -> jax.Array:
    """``L_g x`` for every element: ``x [B, H, W, C]``, ``elements [M, d]`` ->
    ``[M, B, H, W, C]`` (bilinear, zero padding, differentiable in the angles)."""
    group = get_group(group)
    elements = jnp.asarray(elements, jnp.float32)
    if elements.ndim != 2 or elements.shape[-1] != group.dim:
        raise ValueError(
            f"elements must be [M, {group.dim}] for group {group.name!r}, got {elements.shape}"
        )
    return resample(x, group.inverse_matrix(elements))


def rotate_images(x: jax.typing.ArrayLike, angles: jax.typing.ArrayLike) -> jax.Array:
    """Rotations by ``angles [M]`` (radians, the SE2 action): ``[B, H, W, C] ->
    [M, B, H, W, C]``."""
    angles = jnp.asarray(angles, jnp.float32).reshape(-1, 1)
    return transform_images(x, "se2", angles)
