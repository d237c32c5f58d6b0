"""Initialisers shared by the kernel nets."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def check_sizes(**sizes: int | None) -> None:
    """``ValueError`` naming the first size given (not ``None``) that is below 1."""
    for name, value in sizes.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def uniform(bound: float):
    """An initialiser drawing ``U(-bound, bound)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(a: int, b: int, rngs: nnx.Rngs) -> nnx.Linear:
    """Linear layer with PyTorch's default initialisation, ``U(+-1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(a)
    return nnx.Linear(a, b, kernel_init=uniform(bound), bias_init=uniform(bound), rngs=rngs)
