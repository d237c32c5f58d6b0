"""The filters ``g_l: R^d_in -> R^H`` of the multiplicative filter networks
(:mod:`pgcnn_jax.kernels._mfn`) and the grid their output scale is measured on."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.kernels._init import uniform


class _FourierFilter(nnx.Module):
    """``g(x) = sin(W x + b)``; ``W ~ U(+-1/sqrt(fan_in)) * scale`` (``fan_in``: ``d_in``
    unless given), ``b ~ U(-pi, pi)``."""

    def __init__(self, in_features: int, hidden: int, *, scale: float, fan_in: int, rngs: nnx.Rngs):
        bound = scale / math.sqrt(fan_in)
        self.linear = nnx.Linear(
            in_features,
            hidden,
            kernel_init=uniform(bound),
            bias_init=uniform(math.pi),
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.sin(self.linear(x))


class _GaborFilter(nnx.Module):
    """Gabor filter ``exp(-1/2 sum_d (gamma (x_d - mu_{h,d}))^2) sin(W x + b)``.

    ``gamma`` has shape ``[H]`` (isotropic) or ``[H, d_in]`` (anisotropic) and is drawn from
    ``Gamma(alpha, rate=beta)``; ``mu ~ U(-1, 1)`` has shape ``[H, d_in]``. ``W`` is PyTorch's
    default init (with ``fan_in`` in place of ``d_in``) times ``scale * gamma`` (element-wise;
    an isotropic ``gamma_h`` is broadcast over the input dims); ``b ~ U(-pi, pi)``. ``gamma``
    and ``mu`` are learnable; the ``gamma`` scaling of ``W`` happens at initialisation only.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        *,
        scale: float,
        alpha: float,
        beta: float,
        anisotropic: bool,
        fan_in: int,
        rngs: nnx.Rngs,
    ):
        gamma_shape = (hidden, in_features) if anisotropic else (hidden,)
        gamma = jax.random.gamma(rngs.params(), alpha, gamma_shape, jnp.float32) / beta
        self.gamma = nnx.Param(gamma)
        self.mu = nnx.Param(
            jax.random.uniform(rngs.params(), (hidden, in_features), jnp.float32, -1.0, 1.0)
        )
        bound = 1.0 / math.sqrt(fan_in)
        # nnx kernel is [d_in, H] (the transpose of PyTorch's [H, d_in] weight).
        w_scale = scale * (gamma.T if anisotropic else gamma[None, :])
        self.linear = nnx.Linear(
            in_features,
            hidden,
            kernel_init=lambda key, shape, dtype=jnp.float32: (
                jax.random.uniform(key, shape, dtype, -bound, bound) * w_scale.astype(dtype)
            ),
            bias_init=uniform(math.pi),
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.gamma[...]
        if gamma.ndim == 1:
            gamma = gamma[:, None]
        lead = (1,) * (x.ndim - 1)  # explicit broadcasting (rank promotion may be disabled)
        mu = self.mu[...].reshape(lead + self.mu.shape)
        gamma = gamma.reshape(lead + gamma.shape)
        diff = x[..., None, :] - mu  # [..., H, d_in]
        envelope = jnp.exp(-0.5 * jnp.sum((gamma * diff) ** 2, axis=-1))
        return envelope * jnp.sin(self.linear(x))


def _calibration_points(in_features: int) -> jax.Array:
    """A fixed grid on ``[-1, 1]^d_in`` (9 points per axis up to ``d_in = 3``, fewer above)
    on which :class:`_MFN` measures its output scale for ``unit_output``."""
    per_axis = max(2, min(9, round(1000 ** (1.0 / in_features))))
    axis = jnp.linspace(-1.0, 1.0, per_axis)
    grids = jnp.meshgrid(*([axis] * in_features), indexing="ij")
    return jnp.stack([g.ravel() for g in grids], axis=-1)
