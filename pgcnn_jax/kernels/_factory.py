"""Kernel-net factory by name."""

from __future__ import annotations

from flax import nnx

from pgcnn_jax.kernels._mfn import FourierNet, GaborNet, MAGNet
from pgcnn_jax.kernels._nets import SIREN, MLPKernel

KERNEL_NAMES = (
    "siren",
    "mlp_relu",
    "mlp_leaky_relu",
    "mlp_swish",
    "fourier",
    "gabor",
    "magnet",
)


def make_kernel_net(
    kind: str,
    in_features: int,
    out_features: int,
    *,
    hidden: int = 32,
    num_layers: int = 3,
    omega_0: float = 10.0,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Builds the kernel net called ``kind`` (one of :data:`KERNEL_NAMES`).

    ``omega_0`` is used by the SIREN only.
    """
    if kind == "siren":
        return SIREN(
            in_features,
            out_features,
            hidden=hidden,
            num_layers=num_layers,
            omega_0=omega_0,
            rngs=rngs,
        )
    if kind.startswith("mlp_") and kind in KERNEL_NAMES:
        return MLPKernel(
            in_features,
            out_features,
            hidden=hidden,
            num_layers=num_layers,
            activation=kind[len("mlp_") :],
            rngs=rngs,
        )
    if kind in ("fourier", "gabor", "magnet"):
        cls = {"fourier": FourierNet, "gabor": GaborNet, "magnet": MAGNet}[kind]
        return cls(in_features, out_features, hidden=hidden, num_layers=num_layers, rngs=rngs)
    raise ValueError(f"unknown kernel {kind!r}; expected one of {KERNEL_NAMES}")
