"""Kernel-net factory by name (a shortcut for :meth:`KernelSpec.make_net`)."""

from __future__ import annotations

from flax import nnx

from pgcnn_jax.kernels._spec import KernelSpec

__all__ = ["make_kernel_net"]


def make_kernel_net(
    kind: str | KernelSpec,
    in_features: int,
    out_features: int,
    *,
    hidden: int | None = None,
    num_layers: int | None = None,
    rngs: nnx.Rngs,
    **settings,
) -> nnx.Module:
    """Builds the kernel net ``kind``: a registered name (with ``hidden`` 32, ``num_layers``
    3 and the net's default options unless given) or a :class:`KernelSpec` (whose settings
    ``hidden`` / ``num_layers`` / ``settings``, when given, override). ``settings`` are the
    net's own (``omega_0=30.0`` for the SIREN); ``ValueError`` for one the net lacks."""
    spec = kind if isinstance(kind, KernelSpec) else KernelSpec(net=kind)
    changes = dict(hidden=hidden, layers=num_layers)
    return spec.replace(**{k: v for k, v in changes.items() if v is not None}, **settings).make_net(
        in_features, out_features, rngs=rngs
    )
