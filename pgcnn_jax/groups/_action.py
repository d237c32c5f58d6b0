"""The action of planar group elements on images: exact pixel permutations for signed
permutation matrices (quarter turns, flips) and differentiable bilinear resampling otherwise.

An element ``g`` maps an image ``x`` to ``(L_g x)(p) = x(A(g)^{-1} p)`` on centred
``(row, col)`` pixel coordinates (centre ``((H - 1) / 2, (W - 1) / 2)``): a rotation by 90
degrees resamples exactly like the pixel permutation and the mirror ``(0, -1)`` reverses the
columns. This module is the one implementation every caller uses (models, testing, analysis,
data), through :meth:`pgcnn_jax.groups.Group.act` / ``transform_images`` and
:func:`resample`.

Unlike the reference's ``affine_grid(align_corners=True)`` + ``grid_sample(align_corners=
False)`` pair (REFERENCE 4.4), there is no ``(W - 1) / W`` zoom and no half-pixel shift: the
identity matrix is exactly the identity. Out-of-image samples read zeros; gradients flow to the
matrices (hence to the elements) through the bilinear weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


def is_grid_matrix(b: np.ndarray, tol: float = 1e-5) -> bool:
    """Whether the ``2 x 2`` matrix ``b`` is a signed permutation (up to ``tol``)."""
    rounded = np.round(b)
    if np.max(np.abs(b - rounded)) > tol:
        return False
    return bool(np.all(np.sum(np.abs(rounded), axis=0) == 1) and abs(np.linalg.det(rounded)) == 1)


def permute_pixels(x: jax.typing.ArrayLike, b: np.ndarray, element=None) -> jax.Array:
    """``y(p) = x(b p)`` on the spatial axes 1, 2 of ``x [B, H, W, ...]`` for a signed
    permutation matrix ``b`` (exact: pixels move, nothing is interpolated)."""
    x = jnp.asarray(x)
    b = np.round(np.asarray(b, np.float64)).astype(np.int64)
    h, w = x.shape[1], x.shape[2]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    q = np.stack([rows, cols], -1) - centre
    src = np.rint(q @ b.T + centre).astype(np.int64)
    if src.min() < 0 or src[..., 0].max() >= h or src[..., 1].max() >= w:
        what = "matrix" if element is None else "element"
        value = b.tolist() if element is None else element
        raise ValueError(f"{what} {value!r} does not map a {h}x{w} grid onto itself")
    return x[:, src[..., 0], src[..., 1]]
