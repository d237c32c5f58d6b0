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

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.kernels._init import check_sizes, torch_linear, uniform
from pgcnn_jax.kernels._mfn_filters import _calibration_points, _FourierFilter, _GaborFilter
from pgcnn_jax.kernels._registry import FactorInit, check_positive, register_kernel_net

MFN_KINDS = ("fourier", "gabor", "magnet")


def _check_args(in_features: int, out_features: int, hidden: int, num_layers: int) -> None:
    check_sizes(in_features=in_features, out_features=out_features, hidden=hidden)
    if num_layers < 1:
        raise ValueError(f"a multiplicative filter network needs num_layers >= 1, got {num_layers}")


def _fan_in(in_features: int, first_fan_in: int | None) -> int:
    """The fan-in of the filters' ``W`` bound: ``d_in``, or ``first_fan_in`` (a separable
    kernel's factors use the joint net's input size, keeping its spectrum)."""
    check_sizes(first_fan_in=first_fan_in)
    return in_features if first_fan_in is None else first_fan_in


def _check_gamma_args(alpha: float, beta: float) -> None:
    if not alpha > 0:
        raise ValueError(f"the Gamma shape alpha must be > 0, got {alpha}")
    if not beta > 0:
        raise ValueError(f"the Gamma rate beta must be > 0, got {beta}")


class _MFN(nnx.Module):
    """Shared body: ``L + 1`` filters (:meth:`_make_filter`), the hidden linears and the
    output linear; ``filter_settings`` go to :meth:`_make_filter`.

    Args:
        in_features: Input dimension ``d_in``.
        out_features: Output dimension.
        hidden: Hidden width ``H``.
        num_layers: Number ``L >= 1`` of hidden linears (there are ``L + 1`` filters).
        input_scale: Filter frequency scale (256 in the reference), divided by ``sqrt(L + 1)``.
        first_fan_in, unit_output: see the module docstring.
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
        **filter_settings,
    ):
        _check_args(in_features, out_features, hidden, num_layers)
        fan_in = _fan_in(in_features, first_fan_in)
        scale = input_scale / math.sqrt(num_layers + 1)
        filter_kw = dict(scale=scale, fan_in=fan_in, num_layers=num_layers, rngs=rngs)
        self.filters = nnx.List(
            [
                self._make_filter(i, in_features, hidden, **filter_kw, **filter_settings)
                for i in range(num_layers + 1)
            ]
        )
        w_bound = math.sqrt(1.0 / hidden)
        b_bound = 1.0 / math.sqrt(hidden)
        self.linears = nnx.List(
            [
                nnx.Linear(
                    hidden,
                    hidden,
                    kernel_init=uniform(w_bound),
                    bias_init=uniform(b_bound),
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )
        self.out = torch_linear(hidden, out_features, rngs)
        if unit_output:
            self._unit_output(in_features)

    def _make_filter(self, index, in_features, hidden, *, scale, fan_in, num_layers, rngs):
        """Filter ``g_index`` (``scale``: the filter frequency scale ``input_scale /
        sqrt(L + 1)``; ``fan_in``: of the ``W`` bound)."""
        raise NotImplementedError

    def _unit_output(self, in_features: int) -> None:
        """Rescales the output linear (weights and bias) so that the output's root mean square
        over :func:`_calibration_points` is 1 (the unit-scale factor of a separable kernel)."""
        rms = jnp.sqrt(jnp.mean(jnp.square(self(_calibration_points(in_features)))))
        scale = 1.0 / jnp.maximum(rms, 1e-12)
        self.out.kernel[...] = self.out.kernel[...] * scale
        self.out.bias[...] = self.out.bias[...] * scale

    def __call__(self, x: jax.Array) -> jax.Array:
        z = self.filters[0](x)
        for filt, linear in zip(self.filters[1:], self.linears, strict=True):
            z = filt(x) * linear(z)
        return self.out(z)


class FourierNet(_MFN):
    """Multiplicative filter network with Fourier filters (REFERENCE 2.5).

    ``g_l(x) = sin(W_l x + b_l)`` with ``W_l ~ U(+-1/sqrt(d_in)) * input_scale / sqrt(L + 1)``
    and ``b_l ~ U(-pi, pi)``; ``z_0 = g_0(x)``, ``z_l = g_l(x) * (W_l z_{l-1} + b_l)``,
    output ``= linear(z_L)``. Arguments: see :class:`_MFN`.
    """

    def _make_filter(self, index, in_features, hidden, *, scale, fan_in, num_layers, rngs):
        return _FourierFilter(in_features, hidden, scale=scale, fan_in=fan_in, rngs=rngs)


class _GaborMFN(_MFN):
    r"""Shared filters of :class:`GaborNet` and :class:`MAGNet`: Gabor filters, isotropic
    or not (:attr:`_ANISOTROPIC`), with the Gamma shape of filter ``l`` given by
    :meth:`_gamma_shape`:

    .. math::

        g_l(x)_h = \exp\Big(-\tfrac12 \sum_d \big(\gamma_{l,h,d} (x_d - \mu_{l,h,d})\big)^2
        \Big) \sin(W_l x + b_l)_h,

    (``gamma_{l,h,d} = gamma_{l,h}`` for all ``d`` when isotropic), ``mu ~ U(-1, 1)``,
    ``W_l[h, d] = U(+-1/sqrt(d_in)) * input_scale / sqrt(L+1) * gamma_{l,h,d}``,
    ``b_l ~ U(-pi, pi)``; ``gamma`` and ``mu`` are learnable.

    Arguments: those of :class:`_MFN` and ``alpha``, the Gamma shape numerator (6 in the
    reference), and ``beta``, the Gamma rate (1 in the reference); ``ValueError`` also for
    an ``alpha`` or ``beta`` that is not positive.
    """

    _ANISOTROPIC = False

    @staticmethod
    def _gamma_shape(alpha: float, index: int, num_layers: int) -> float:
        raise NotImplementedError

    def _make_filter(
        self, index, in_features, hidden, *, scale, fan_in, num_layers, rngs, alpha=6.0, beta=1.0
    ):
        _check_gamma_args(alpha, beta)
        return _GaborFilter(
            in_features,
            hidden,
            scale=scale,
            alpha=self._gamma_shape(alpha, index, num_layers),
            beta=beta,
            anisotropic=self._ANISOTROPIC,
            fan_in=fan_in,
            rngs=rngs,
        )


class GaborNet(_GaborMFN):
    """Multiplicative filter network with isotropic Gabor filters (REFERENCE 2.5): one
    envelope width ``gamma_{l,h}`` per filter unit, drawn from
    ``Gamma(shape alpha/(L+1), rate beta)`` (the same shape for every filter). The filters and
    the other draws: see :class:`_GaborMFN`, which lists the arguments too.
    """

    _ANISOTROPIC = False

    @staticmethod
    def _gamma_shape(alpha: float, index: int, num_layers: int) -> float:
        return alpha / (num_layers + 1)


class MAGNet(_GaborMFN):
    """Multiplicative Anisotropic Gabor Network (REFERENCE 2.5; ``steerable=False``): one
    envelope width ``gamma_{l,h,d}`` per filter unit and input coordinate, drawn from
    ``Gamma(shape alpha/(l+1), rate beta)`` for filter ``l = 0..L`` (6, 3, 2, 1.5 for
    ``L = 3``). The filters and the other draws: see :class:`_GaborMFN`, which lists the
    arguments too.
    """

    _ANISOTROPIC = True

    @staticmethod
    def _gamma_shape(alpha: float, index: int, num_layers: int) -> float:
        return alpha / (index + 1)


@dataclasses.dataclass(frozen=True)
class MFNOptions:
    """Settings of the ``fourier`` kernel net: ``input_scale``, the filter frequency scale
    (divided by ``sqrt(L + 1)``; 256 in the reference)."""

    input_scale: float = 256.0

    def __post_init__(self):
        check_positive(type(self).__name__, "input_scale", self.input_scale)


@dataclasses.dataclass(frozen=True)
class GaborOptions(MFNOptions):
    """Settings of the ``gabor`` and ``magnet`` kernel nets: ``input_scale`` (see
    :class:`MFNOptions`), the Gamma shape numerator ``alpha`` (6) and rate ``beta`` (1) of
    their envelopes."""

    alpha: float = 6.0
    beta: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check_positive(type(self).__name__, "alpha", self.alpha)
        check_positive(type(self).__name__, "beta", self.beta)


def _mfn(
    in_features,
    out_features,
    *,
    hidden,
    layers,
    options,
    factor: FactorInit | None,
    rngs,
    cls: type[_MFN],
):
    """An MFN of class ``cls``; as a matched separable factor: the joint net's fan-in in the
    filters' bound and, for ``psi_S``, the output rescaled to unit scale (the filters draw
    random phases already: absent inputs are not used)."""
    return cls(
        in_features,
        out_features,
        hidden=hidden,
        num_layers=layers,
        first_fan_in=factor.joint_inputs if factor else None,
        unit_output=bool(factor and factor.unit_output),
        rngs=rngs,
        **dataclasses.asdict(options),
    )


for _name, _cls, _options in zip(
    MFN_KINDS, (FourierNet, GaborNet, MAGNet), (MFNOptions, GaborOptions, GaborOptions), strict=True
):
    register_kernel_net(_name, functools.partial(_mfn, cls=_cls), options=_options, min_layers=1)
