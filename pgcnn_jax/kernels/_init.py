"""Initialisers shared by the kernel nets."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def uniform(bound: float):
    """An initialiser drawing ``U(-bound, bound)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(a: int, b: int, rngs: nnx.Rngs) -> nnx.Linear:
    """Linear layer with PyTorch's default initialisation, ``U(+-1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(a)
    return nnx.Linear(a, b, kernel_init=uniform(bound), bias_init=uniform(bound), rngs=rngs)
