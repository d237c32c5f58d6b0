"""Diagnostics of kernel nets and models at initialisation (issue 14).

* :func:`angle_roughness`: how fast a group-conv kernel net varies along the relative angle,
  ``rms(d psi / d a) / rms(psi)`` over the normalised angle ``a in [-1, 1)``. A joint net is
  swept along its last input at every tap of the disc; a separable ``psi_G`` along its one
  input.
* :func:`sampling_noise_ratio`: the variance of a model's logit difference across sampling
  keys (the Monte Carlo draws of the group elements) over its variance across images. With few
  sampled elements a rough kernel turns each pass's orientation mixing into noise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pgcnn_jax.kernels import disc_mask, relative_positions

__all__ = ["angle_roughness", "sampling_noise_ratio"]


def angle_roughness(
    net, *, spatial_inputs: bool, num_angles: int = 256, kernel_size: int = 7
) -> float:
    """``rms(d psi / d a) / rms(psi)`` of a kernel net along the normalised relative angle
    ``a`` (its last input), over one turn ``a in [-1, 1)`` sampled at ``num_angles`` points
    (central differences inside the interval: the net is not periodic in ``a``, the jump
    from ``a -> 1`` back to ``-1`` is not counted) and every output.

    ``spatial_inputs=True``: ``net`` is a joint net on ``[p_row, p_col, a]``, swept at every
    tap ``p`` of the ``kernel_size`` disc; ``False``: ``net`` is a separable ``psi_G`` on
    ``[a]``. Only SE(2)-type inputs (one angle) are handled."""
    if num_angles < 8:
        raise ValueError(f"num_angles must be >= 8, got {num_angles}")
    a = jnp.linspace(-1.0, 1.0, num_angles, endpoint=False)[:, None]  # [A, 1]
    if spatial_inputs:
        mask = np.asarray(disc_mask(kernel_size)) > 0
        taps = jnp.asarray(np.asarray(relative_positions(kernel_size))[mask])  # [P, 2]
        pts = jnp.concatenate(
            [
                jnp.broadcast_to(taps[:, None, :], (taps.shape[0], num_angles, 2)),
                jnp.broadcast_to(a[None], (taps.shape[0], num_angles, 1)),
            ],
            axis=-1,
        )
    else:
        pts = a[None]  # [1, A, 1]
    psi = np.asarray(net(pts), np.float64)  # [P, A, out]
    deriv = np.gradient(psi, 2.0 / num_angles, axis=1)  # the net is not periodic in a
    return float(np.sqrt(np.mean(deriv**2)) / np.sqrt(np.mean(psi**2)))


def sampling_noise_ratio(model: nnx.Module, images: jax.Array, keys: jax.Array) -> float:
    """Variance of the logit difference ``logits[:, 1] - logits[:, 0]`` across the sampling
    ``keys`` (mean over images) over its variance across ``images`` (of the mean over keys), in
    eval mode. ``images [B, H, W, C]`` (``B >= 2``), ``keys [K]`` (``K >= 2``)."""
    if images.shape[0] < 2 or keys.shape[0] < 2:
        raise ValueError(
            f"need >= 2 images and >= 2 keys, got images {images.shape}, keys {keys.shape}"
        )
    model.eval()
    graphdef, state = nnx.split(model)
    diffs = []
    for key in keys:
        logits = np.asarray(_eval_logits(graphdef, state, images, key), np.float64)
        if logits.shape[-1] < 2:
            raise ValueError(f"need >= 2 classes, got logits of shape {logits.shape}")
        diffs.append(logits[:, 1] - logits[:, 0])
    d = np.stack(diffs)  # [K, B]
    return float(np.mean(np.var(d, axis=0)) / np.var(np.mean(d, axis=0)))


@functools.partial(jax.jit, static_argnums=0)
def _eval_logits(graphdef, state, images, key):
    """The logits of the eval-mode model ``(graphdef, state)`` on ``images`` for the sampling
    ``key``, compiled once per model structure (models that differ only in their weights share
    it)."""
    from pgcnn_jax.train import step_rngs  # the model call convention of the trainer

    return nnx.merge(graphdef, state)(images, rngs=step_rngs(key))
