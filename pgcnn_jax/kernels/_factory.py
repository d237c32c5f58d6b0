"""Kernel-net factory by name (a shortcut for :meth:`KernelSpec.make_net`)."""

from __future__ import annotations

from flax import nnx

from pgcnn_jax.kernels._spec import KERNEL_NAMES, KernelSpec

__all__ = ["KERNEL_NAMES", "make_kernel_net"]


def make_kernel_net(
    kind: str | KernelSpec,
    in_features: int,
    out_features: int,
    *,
    hidden: int | None = None,
    num_layers: int | None = None,
    omega_0: float | None = None,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Builds the kernel net ``kind``: a name of :data:`KERNEL_NAMES` (with ``hidden`` 32,
    ``num_layers`` 3 and ``omega_0`` 10 unless given; ``omega_0`` is used by the SIREN only)
    or a :class:`KernelSpec` (whose settings ``hidden`` / ``num_layers`` / ``omega_0``, when
    given, override)."""
    if isinstance(kind, str) and kind not in KERNEL_NAMES:
        raise ValueError(f"unknown kernel {kind!r}; expected one of {KERNEL_NAMES}")
    spec = kind if isinstance(kind, KernelSpec) else KernelSpec(net=kind)
    changes = dict(hidden=hidden, layers=num_layers, omega_0=omega_0)
    spec = spec.replace(**{k: v for k, v in changes.items() if v is not None})
    return spec.make_net(in_features, out_features, rngs=rngs)
