"""Class probabilities of one image under input rotations (paper Figure 4)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pgcnn_jax.analysis._profile import rotation_matrices
from pgcnn_jax.models import resample

__all__ = ["rotated_copies", "rotation_response"]


def _fill_array(fill: float | Sequence[float], channels: int) -> jax.Array:
    f = jnp.asarray(fill, jnp.float32).reshape(-1)
    if f.shape[0] not in (1, channels):
        raise ValueError(f"fill must be one value or one per channel ({channels}), got {fill!r}")
    return jnp.broadcast_to(f, (channels,)).reshape(1, 1, 1, channels)


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
    shifted = (image - fill_[0])[None]
    return resample(shifted, rotation_matrices(angles_deg))[:, 0] + fill_


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
