"""Continuous kernel networks ``psi: R^d_in -> R^(C_out C_in)`` applied point-wise.

Every net maps ``[..., d_in] -> [..., out_features]`` along the last axis (the reference's
1x1 Conv1d/2d/3d stacks, REFERENCE 2.3-2.5).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.kernels._init import check_sizes, torch_linear, uniform
from pgcnn_jax.kernels._registry import FactorInit, check_positive, register_kernel_net


def _absent_inputs(bound: float, count: int):
    """Bias init ``sum_{i < count} w_i x_i``, ``w_i ~ U(+-bound)``, ``x_i ~ U(-1, 1)``: what
    ``count`` further inputs over ``[-1, 1]`` would add to a unit's pre-activation at a random
    point (a separable factor's share of the joint net's phases)."""

    def init(key, shape, dtype=jnp.float32):
        kw, kx = jax.random.split(key)
        w = jax.random.uniform(kw, (*shape, count), dtype, -bound, bound)
        x = jax.random.uniform(kx, (*shape, count), dtype, -1.0, 1.0)
        return jnp.sum(w * x, axis=-1)

    return init


class SIREN(nnx.Module):
    """SIREN kernel net (REFERENCE 2.4).

    ``num_layers`` linear maps: ``d_in -> H``, ``num_layers - 2`` times ``H -> H``, then
    ``H -> out``. First and hidden layers compute ``sin(omega_0 (W x + b))``; the output layer is
    linear. Initialisation: first layer ``U(-1/fan_in, 1/fan_in)``, every later layer
    ``U(-sqrt(6/fan_in)/omega_0, +sqrt(6/fan_in)/omega_0)``, biases zero.

    ``first_fan_in`` (default ``in_features``) replaces the first layer's ``fan_in``: the
    factors of a separable kernel use the joint net's input size there, so that each keeps the
    joint net's frequency spectrum on its own coordinates (a first layer over fewer inputs
    draws larger weights, a rougher function). ``output_gain`` multiplies the output layer's
    bound: the output has standard deviation about ``output_gain / omega_0`` at
    initialisation (``output_gain = omega_0``: unit scale). ``first_bias_inputs = m > 0``
    draws the first layer's biases as the contribution ``sum_i w_i x_i`` of ``m`` absent inputs
    (``w_i`` drawn like the weights, ``x_i ~ U(-1, 1)``): a factor of a separable kernel gets
    the phases the joint net's other inputs give it (with zero biases a SIREN is an odd
    function, which the joint net is not along any one input).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int = 32,
        num_layers: int = 3,
        omega_0: float = 10.0,
        first_fan_in: int | None = None,
        first_bias_inputs: int = 0,
        output_gain: float = 1.0,
        rngs: nnx.Rngs,
    ):
        if num_layers < 2:
            raise ValueError(f"a SIREN needs num_layers >= 2, got {num_layers}")
        if first_bias_inputs < 0:
            raise ValueError(f"first_bias_inputs must be >= 0, got {first_bias_inputs}")
        check_sizes(hidden=hidden, first_fan_in=first_fan_in)
        if not output_gain > 0:
            raise ValueError(f"output_gain must be > 0, got {output_gain}")
        self.omega_0 = float(omega_0)
        dims = [in_features] + [hidden] * (num_layers - 1) + [out_features]
        first = in_features if first_fan_in is None else first_fan_in
        last = len(dims) - 2
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            bound = 1.0 / first if i == 0 else math.sqrt(6.0 / a) / self.omega_0
            if i == last:
                bound *= output_gain
            bias_init = nnx.initializers.zeros
            if i == 0 and first_bias_inputs:
                bias_init = _absent_inputs(bound, first_bias_inputs)
            layers.append(
                nnx.Linear(a, b, kernel_init=uniform(bound), bias_init=bias_init, rngs=rngs)
            )
        self.layers = nnx.List(layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jnp.sin(self.omega_0 * layer(x))
        return self.layers[-1](x)


_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "swish": lambda x: x * jax.nn.sigmoid(x),
}


class MLPKernel(nnx.Module):
    """MLP kernel net (REFERENCE 2.5): ``[linear -> norm -> activation] x (L - 1) -> linear``.

    ``norm="batch"`` normalises each hidden unit over all evaluated points (the reference's
    BatchNorm over the grid); ``"none"`` skips it. PyTorch default initialisation.

    Called with a ``mask`` (``x.shape[:-1]``, 1 = valid point), the BatchNorm statistics (and
    its running averages) are taken over the valid points only (DESIGN 4): the points of
    masked group elements of a partial layer, which the reference never evaluates, do not
    change the kernel rendered at the valid ones.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int = 32,
        num_layers: int = 3,
        activation: str = "relu",
        norm: str = "batch",
        rngs: nnx.Rngs,
    ):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected {tuple(_ACTIVATIONS)}")
        if norm not in ("batch", "none"):
            raise ValueError(f"unknown kernel norm {norm!r}; expected 'batch' or 'none'")
        if num_layers < 2:
            raise ValueError(f"an MLP kernel needs num_layers >= 2, got {num_layers}")
        self.activation = activation
        dims = [in_features] + [hidden] * (num_layers - 1)
        self.layers = nnx.List(
            [torch_linear(a, b, rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.norms = nnx.List(
            [nnx.BatchNorm(hidden, momentum=0.9, epsilon=1e-5, rngs=rngs) for _ in dims[1:]]
            if norm == "batch"
            else []
        )
        self.out = torch_linear(hidden, out_features, rngs)

    @property
    def reduces_over_points(self) -> bool:
        """Whether the output at one point depends on the other points (BatchNorm statistics),
        so that renderers must pass the validity ``mask`` of the points."""
        return len(self.norms) > 0

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``[..., d_in] -> [..., out]``; ``mask`` (``[...]``, optional) marks the points that
        enter the BatchNorm statistics."""
        act = _ACTIVATIONS[self.activation]
        if mask is not None:
            mask = jnp.asarray(mask)
            if mask.shape != x.shape[:-1]:
                raise ValueError(
                    f"mask of shape {mask.shape} does not match points of shape {x.shape[:-1]}"
                )
            mask = mask.reshape(-1, 1) > 0
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if len(self.norms):
                shape = x.shape
                x = self.norms[i](x.reshape(-1, shape[-1]), mask=mask).reshape(shape)
            x = act(x)
        return self.out(x)


@dataclasses.dataclass(frozen=True)
class SirenOptions:
    """Settings of the ``siren`` kernel net: ``omega_0``, its frequency."""

    omega_0: float = 10.0

    def __post_init__(self):
        check_positive("SirenOptions", "omega_0", self.omega_0)


def _siren(in_features, out_features, *, hidden, layers, options, factor: FactorInit | None, rngs):
    """A :class:`SIREN`; as a matched separable factor: the joint net's fan-in, first-layer
    biases drawn as its absent inputs' phases, unit output scale (output bound times
    ``omega_0``) for ``psi_S``."""
    return SIREN(
        in_features,
        out_features,
        hidden=hidden,
        num_layers=layers,
        omega_0=options.omega_0,
        first_fan_in=factor.joint_inputs if factor else None,
        first_bias_inputs=factor.absent_inputs if factor else 0,
        output_gain=options.omega_0 if factor and factor.unit_output else 1.0,
        rngs=rngs,
    )


def _mlp(in_features, out_features, *, hidden, layers, options, factor, rngs, activation: str):
    """An :class:`MLPKernel` with ``activation``; a separable factor is initialised like a net
    on its own (PyTorch's default initialisation has no spectrum to match)."""
    del options, factor
    kw = dict(hidden=hidden, num_layers=layers, activation=activation, rngs=rngs)
    return MLPKernel(in_features, out_features, **kw)


register_kernel_net("siren", _siren, options=SirenOptions)
for _activation in _ACTIVATIONS:
    register_kernel_net(
        f"mlp_{_activation}",
        functools.partial(_mlp, activation=_activation),
        reduces_over_points=True,
    )
