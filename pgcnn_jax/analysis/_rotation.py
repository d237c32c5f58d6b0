"""Class probabilities of one image under input rotations (paper Figure 4)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["rotated_copies", "rotation_response"]


def _fill_array(fill: float | Sequence[float], channels: int) -> jax.Array:
    f = jnp.asarray(fill, jnp.float32).reshape(-1)
    if f.shape[0] not in (1, channels):
        raise ValueError(f"fill must be one value or one per channel ({channels}), got {fill!r}")
    return jnp.broadcast_to(f, (channels,)).reshape(1, 1, 1, channels)


def _sources(h: int, w: int, angles_deg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Input coordinates ``[A, H, W]`` each output pixel samples, as in :func:`rotate_images`
    (float64; cosine and sine of multiples of 90 degrees are exact, so are those rotations)."""
    a = np.deg2rad(np.asarray(angles_deg, np.float64))
    cos, sin = np.cos(a), np.sin(a)
    quarter = np.asarray(angles_deg, np.float64) / 90.0
    exact = np.abs(quarter - np.round(quarter)) < 1e-9
    k = np.round(quarter).astype(np.int64) % 4
    cos = np.where(exact, np.array([1.0, 0.0, -1.0, 0.0])[k], cos)[:, None, None]
    sin = np.where(exact, np.array([0.0, 1.0, 0.0, -1.0])[k], sin)[:, None, None]
    cr, cc = (h - 1) / 2.0, (w - 1) / 2.0
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    dr, dc = rows - cr, cols - cc
    return cr + cos * dr - sin * dc, cc + sin * dr + cos * dc


@jax.jit
def _bilinear(x: jax.Array, src_r: jax.Array, src_c: jax.Array) -> jax.Array:
    """``x [H, W, C]`` sampled at ``[A, H, W]`` coordinates, zero outside: ``[A, H, W, C]``."""
    h, w = x.shape[0], x.shape[1]
    r0, c0 = jnp.floor(src_r), jnp.floor(src_c)
    out = jnp.zeros((*src_r.shape, x.shape[-1]), x.dtype)
    for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
        rr, cc = r0 + dr, c0 + dc
        wgt = (1 - jnp.abs(src_r - rr)) * (1 - jnp.abs(src_c - cc))
        inside = (rr >= 0) & (rr <= h - 1) & (cc >= 0) & (cc <= w - 1)
        ri = jnp.clip(rr, 0, h - 1).astype(jnp.int32)
        ci = jnp.clip(cc, 0, w - 1).astype(jnp.int32)
        out = out + jnp.where(inside, wgt, 0.0)[..., None] * x[ri, ci, :]
    return out


def rotated_copies(
    image: jax.typing.ArrayLike, angles_deg: Sequence[float], *, fill: float | Sequence[float] = 0.0
) -> jax.Array:
    """``image [H, W, C]`` rotated by every angle at once, ``[A, H, W, C]``: the rotations of
    :func:`rotate_images` (bilinear, ``+90`` is ``rot90(x, k=-1)``, multiples of 90 degrees
    exact), with pixels from outside the image set to ``fill``."""
    image = jnp.asarray(image, jnp.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    fill_ = _fill_array(fill, image.shape[-1])
    src_r, src_c = _sources(image.shape[0], image.shape[1], angles_deg)
    shifted = image - fill_[0]
    return (
        _bilinear(shifted, jnp.asarray(src_r, jnp.float32), jnp.asarray(src_c, jnp.float32)) + fill_
    )


@functools.partial(jax.jit, static_argnums=0)
def _probs(graphdef, state, x: jax.Array, key: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return jax.nn.softmax(model(x, rngs=nnx.Rngs(sample=key, dropout=key)), axis=-1)


def rotation_response(
    model: nnx.Module,
    image: jax.typing.ArrayLike,
    angles_deg: Sequence[float],
    *,
    seed: int = 0,
    batch: int = 64,
    fill: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """Softmax of ``model`` on ``image`` rotated by each angle.

    Rotations are :func:`rotated_copies` (those of :func:`rotate_images`: bilinear, ``+90`` is
    ``rot90(x, k=-1)``, clockwise on screen; pass ``-angle`` for torchvision's counter-clockwise
    ``TF.rotate``); pixels whose source lies outside the image take the value ``fill`` (one
    value or one per channel; e.g. the normalised black ``-mean / std``). The model runs in
    eval mode, jit-compiled, on batches of ``batch`` rotated copies; every batch uses the same
    sampling key ``nnx.Rngs(sample=seed, dropout=seed)`` and the last batch is zero-padded to
    ``batch``, so row ``i`` of every batch sees the same sampled group elements. (With
    ``sample_per_batch_element`` each row samples its own elements.)

    Args:
      model: a classifier ``model(x, rngs=...) -> logits [B, classes]``.
      image: one normalised image ``[H, W, C]``.
      angles_deg: rotation angles in degrees.
      seed: sampling seed.
      batch: rotated copies per forward.
      fill: value of pixels rotated in from outside the image.

    Returns:
      ``float32 [len(angles_deg), classes]`` class probabilities.
    """
    image = jnp.asarray(image, jnp.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    angles = [float(a) for a in angles_deg]
    if not angles:
        raise ValueError("angles_deg is empty")
    rotated = rotated_copies(image, angles, fill=fill)

    model.eval()
    graphdef, state = nnx.split(model)
    key = jax.random.key(seed)
    batch = min(batch, len(angles))
    out = []
    for start in range(0, len(angles), batch):
        xb = rotated[start : start + batch]
        n = xb.shape[0]
        if n < batch:
            xb = jnp.concatenate([xb, jnp.zeros((batch - n, *xb.shape[1:]), xb.dtype)])
        out.append(np.asarray(_probs(graphdef, state, xb, key))[:n])
    return np.concatenate(out).astype(np.float32)
