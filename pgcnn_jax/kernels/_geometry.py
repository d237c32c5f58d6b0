"""Relative-position grids and the circular mask of continuous kernels (REFERENCE 2.1-2.2)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def check_kernel_size(kernel_size: int) -> int:
    """Validates an odd positive kernel size."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int | np.integer):
        raise ValueError(f"kernel_size must be an odd int, got {kernel_size!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    return int(kernel_size)


@functools.lru_cache
def _positions(k: int) -> np.ndarray:
    axis = np.linspace(-1.0, 1.0, k) if k > 1 else np.zeros(1)
    rows, cols = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([rows, cols], axis=-1)


def relative_positions(kernel_size: int) -> jax.Array:
    """Kernel tap positions ``[k, k, 2]``: channel 0 is the row offset, channel 1 the column
    offset, each ``linspace(-1, 1, k)`` (``meshgrid(indexing="ij")``). ``k = 1`` gives 0."""
    return jnp.asarray(_positions(check_kernel_size(kernel_size)), jnp.float32)


def disc_inside(kernel_size: int) -> np.ndarray:
    """``[k, k]`` NumPy bool mask of taps with Euclidean norm ``<= 1`` (static: usable while
    tracing, e.g. to choose which taps a depthwise conv adds)."""
    pos = _positions(check_kernel_size(kernel_size))
    return np.linalg.norm(pos, axis=-1) <= 1.0 + 1e-6


def disc_mask(kernel_size: int) -> jax.Array:
    """``[k, k]`` 0/1 mask of taps with Euclidean norm ``<= 1`` (29 of 49 for 7x7, a 5-tap plus
    for 3x3). Rotations preserve the norm, so one mask serves every sampled element."""
    return jnp.asarray(disc_inside(kernel_size), jnp.float32)
