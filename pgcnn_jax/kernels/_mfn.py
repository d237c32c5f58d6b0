r"""Multiplicative filter networks (MFNs) as kernel nets (REFERENCE 2.5).

An MFN with ``num_layers = L`` has ``L + 1`` filters ``g_0 .. g_L: R^d_in -> R^H``, ``L``
hidden linears ``H -> H`` and an output linear ``H -> out``:

.. math::

    z_0 = g_0(x), \qquad z_l = g_l(x) \odot (W_l z_{l-1} + b_l) \quad (l = 1..L),
    \qquad \psi(x) = W_{out} z_L + b_{out}.

Hidden linears use ``W ~ U(+-sqrt(1/H))`` (weight scale 1) and PyTorch's default bias
``U(+-1/sqrt(H))``; the output linear uses PyTorch's default initialisation. The filters are

* Fourier: ``g(x) = sin(W x + b)``;
* Gabor:   ``g(x) = exp(-1/2 sum_d (gamma_h (x_d - mu_{h,d}))^2) sin(W x + b)``, isotropic
  ``gamma_h``;
* MAGNet:  the same envelope with an anisotropic ``gamma_{h,d}``.

Every net maps ``[..., d_in] -> [..., out_features]`` point-wise along the last axis.

Two options serve the factors of a separable kernel
(:meth:`pgcnn_jax.kernels.KernelSpec.make_group_net`): ``first_fan_in`` replaces ``d_in`` in
the filters' ``U(+-1/sqrt(fan_in))`` bound (the joint net's input size, so a factor over fewer
coordinates keeps the joint net's spectrum on them), and ``unit_output`` rescales the output
linear at initialisation so that the output's root mean square over a fixed grid on
``[-1, 1]^d_in`` is 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

MFN_KINDS = ("fourier", "gabor", "magnet")


def _uniform(low: float, high: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, low, high)

    return init


def _torch_linear(a: int, b: int, rngs: nnx.Rngs) -> nnx.Linear:
    """Linear layer with PyTorch's default initialisation, ``U(+-1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(a)
    return nnx.Linear(
        a, b, kernel_init=_uniform(-bound, bound), bias_init=_uniform(-bound, bound), rngs=rngs
    )


def _check_args(in_features: int, out_features: int, hidden: int, num_layers: int) -> None:
    if in_features < 1:
        raise ValueError(f"in_features must be >= 1, got {in_features}")
    if out_features < 1:
        raise ValueError(f"out_features must be >= 1, got {out_features}")
    if hidden < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden}")
    if num_layers < 1:
        raise ValueError(f"a multiplicative filter network needs num_layers >= 1, got {num_layers}")


def _fan_in(in_features: int, first_fan_in: int | None) -> int:
    """The fan-in of the filters' ``W`` bound: ``d_in``, or ``first_fan_in`` (a separable
    kernel's factors use the joint net's input size, keeping its spectrum)."""
    if first_fan_in is None:
        return in_features
    if first_fan_in < 1:
        raise ValueError(f"first_fan_in must be >= 1, got {first_fan_in}")
    return first_fan_in


def _check_gamma_args(alpha: float, beta: float) -> None:
    if not alpha > 0:
        raise ValueError(f"the Gamma shape alpha must be > 0, got {alpha}")
    if not beta > 0:
        raise ValueError(f"the Gamma rate beta must be > 0, got {beta}")


class _FourierFilter(nnx.Module):
    """``g(x) = sin(W x + b)``; ``W ~ U(+-1/sqrt(fan_in)) * scale`` (``fan_in``: ``d_in``
    unless given), ``b ~ U(-pi, pi)``."""

    def __init__(self, in_features: int, hidden: int, *, scale: float, fan_in: int, rngs: nnx.Rngs):
        bound = scale / math.sqrt(fan_in)
        self.linear = nnx.Linear(
            in_features,
            hidden,
            kernel_init=_uniform(-bound, bound),
            bias_init=_uniform(-math.pi, math.pi),
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
            bias_init=_uniform(-math.pi, math.pi),
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


class _MFN(nnx.Module):
    """Shared body: filters, hidden linears and the output linear."""

    def _unit_output(self, in_features: int) -> None:
        """Rescales the output linear (weights and bias) so that the output's root mean square
        over :func:`_calibration_points` is 1 (the unit-scale factor of a separable kernel)."""
        rms = jnp.sqrt(jnp.mean(jnp.square(self(_calibration_points(in_features)))))
        scale = 1.0 / jnp.maximum(rms, 1e-12)
        self.out.kernel[...] = self.out.kernel[...] * scale
        self.out.bias[...] = self.out.bias[...] * scale

    def _build_body(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        num_layers: int,
        rngs: nnx.Rngs,
        unit_output: bool,
    ):
        w_bound = math.sqrt(1.0 / hidden)
        b_bound = 1.0 / math.sqrt(hidden)
        self.linears = nnx.List(
            [
                nnx.Linear(
                    hidden,
                    hidden,
                    kernel_init=_uniform(-w_bound, w_bound),
                    bias_init=_uniform(-b_bound, b_bound),
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )
        self.out = _torch_linear(hidden, out_features, rngs)
        if unit_output:
            self._unit_output(in_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        z = self.filters[0](x)
        for filt, linear in zip(self.filters[1:], self.linears, strict=True):
            z = filt(x) * linear(z)
        return self.out(z)


class FourierNet(_MFN):
    """Multiplicative filter network with Fourier filters (REFERENCE 2.5).

    ``g_l(x) = sin(W_l x + b_l)`` with ``W_l ~ U(+-1/sqrt(d_in)) * input_scale / sqrt(L + 1)``
    and ``b_l ~ U(-pi, pi)``; ``z_0 = g_0(x)``, ``z_l = g_l(x) * (W_l z_{l-1} + b_l)``,
    output ``= linear(z_L)``.

    Args:
        in_features: Input dimension ``d_in``.
        out_features: Output dimension.
        hidden: Hidden width ``H``.
        num_layers: Number ``L >= 1`` of hidden linears (there are ``L + 1`` filters).
        input_scale: Filter frequency scale (256 in the reference), divided by ``sqrt(L + 1)``.
        rngs: Random streams; ``params`` is used.

    Raises:
        ValueError: If a size is < 1.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int = 32,
        num_layers: int = 3,
        input_scale: float = 256.0,
        first_fan_in: int | None = None,
        unit_output: bool = False,
        rngs: nnx.Rngs,
    ):
        _check_args(in_features, out_features, hidden, num_layers)
        fan_in = _fan_in(in_features, first_fan_in)
        scale = input_scale / math.sqrt(num_layers + 1)
        self.filters = nnx.List(
            [
                _FourierFilter(in_features, hidden, scale=scale, fan_in=fan_in, rngs=rngs)
                for _ in range(num_layers + 1)
            ]
        )
        self._build_body(in_features, hidden, out_features, num_layers, rngs, unit_output)


class GaborNet(_MFN):
    r"""Multiplicative filter network with isotropic Gabor filters (REFERENCE 2.5).

    .. math::

        g_l(x)_h = \exp\Big(-\tfrac12 \sum_d \big(\gamma_{l,h} (x_d - \mu_{l,h,d})\big)^2\Big)
        \sin(W_l x + b_l)_h,

    ``gamma_{l,h} ~ Gamma(shape alpha/(L+1), rate beta)`` (the same shape for every filter),
    ``mu ~ U(-1, 1)``, ``W_l = U(+-1/sqrt(d_in)) * input_scale / sqrt(L+1) * gamma_{l,h}``,
    ``b_l ~ U(-pi, pi)``; ``gamma`` and ``mu`` are learnable.

    Args:
        in_features: Input dimension ``d_in``.
        out_features: Output dimension.
        hidden: Hidden width ``H``.
        num_layers: Number ``L >= 1`` of hidden linears (there are ``L + 1`` filters).
        input_scale: Filter frequency scale (256 in the reference), divided by ``sqrt(L + 1)``.
        alpha: Gamma shape numerator (6 in the reference); the shape is ``alpha / (L + 1)``.
        beta: Gamma rate (1 in the reference).
        rngs: Random streams; ``params`` is used.

    Raises:
        ValueError: If a size is < 1 or ``alpha``/``beta`` is not positive.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int = 32,
        num_layers: int = 3,
        input_scale: float = 256.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        first_fan_in: int | None = None,
        unit_output: bool = False,
        rngs: nnx.Rngs,
    ):
        _check_args(in_features, out_features, hidden, num_layers)
        _check_gamma_args(alpha, beta)
        fan_in = _fan_in(in_features, first_fan_in)
        scale = input_scale / math.sqrt(num_layers + 1)
        shape = alpha / (num_layers + 1)
        self.filters = nnx.List(
            [
                _GaborFilter(
                    in_features,
                    hidden,
                    scale=scale,
                    alpha=shape,
                    beta=beta,
                    anisotropic=False,
                    fan_in=fan_in,
                    rngs=rngs,
                )
                for _ in range(num_layers + 1)
            ]
        )
        self._build_body(in_features, hidden, out_features, num_layers, rngs, unit_output)


class MAGNet(_MFN):
    r"""Multiplicative Anisotropic Gabor Network (REFERENCE 2.5; ``steerable=False``).

    .. math::

        g_l(x)_h = \exp\Big(-\tfrac12 \sum_d \big(\gamma_{l,h,d} (x_d - \mu_{l,h,d})\big)^2
        \Big) \sin(W_l x + b_l)_h,

    ``gamma_{l,h,d} ~ Gamma(shape alpha/(l+1), rate beta)`` for filter ``l = 0..L`` (6, 3, 2,
    1.5 for ``L = 3``), ``mu ~ U(-1, 1)``,
    ``W_l[h, d] = U(+-1/sqrt(d_in)) * input_scale / sqrt(L+1) * gamma_{l,h,d}``,
    ``b_l ~ U(-pi, pi)``; ``gamma`` and ``mu`` are learnable.

    Args:
        in_features: Input dimension ``d_in``.
        out_features: Output dimension.
        hidden: Hidden width ``H``.
        num_layers: Number ``L >= 1`` of hidden linears (there are ``L + 1`` filters).
        input_scale: Filter frequency scale (256 in the reference), divided by ``sqrt(L + 1)``.
        alpha: Gamma shape numerator (6 in the reference); filter ``l`` uses ``alpha / (l + 1)``.
        beta: Gamma rate (1 in the reference).
        rngs: Random streams; ``params`` is used.

    Raises:
        ValueError: If a size is < 1 or ``alpha``/``beta`` is not positive.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int = 32,
        num_layers: int = 3,
        input_scale: float = 256.0,
        alpha: float = 6.0,
        beta: float = 1.0,
        first_fan_in: int | None = None,
        unit_output: bool = False,
        rngs: nnx.Rngs,
    ):
        _check_args(in_features, out_features, hidden, num_layers)
        _check_gamma_args(alpha, beta)
        fan_in = _fan_in(in_features, first_fan_in)
        scale = input_scale / math.sqrt(num_layers + 1)
        self.filters = nnx.List(
            [
                _GaborFilter(
                    in_features,
                    hidden,
                    scale=scale,
                    alpha=alpha / (idx + 1),
                    beta=beta,
                    anisotropic=True,
                    fan_in=fan_in,
                    rngs=rngs,
                )
                for idx in range(num_layers + 1)
            ]
        )
        self._build_body(in_features, hidden, out_features, num_layers, rngs, unit_output)
