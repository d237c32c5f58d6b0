"""Continuous kernel networks, their spec and the geometry they are evaluated on.

Kernel nets are registered by name (:func:`register_kernel_net`): a new net is one file with
its module, its options dataclass and a factory, and one registration call (imported below
for the built-in ones). :class:`KernelSpec` names the net and carries its options.
"""

# Registers the kernel nets: SIREN and MLPs first, then the MFNs (the order of KERNEL_NAMES).
from pgcnn_jax.kernels import _nets  # noqa: F401

# isort: split
from pgcnn_jax.kernels import _mfn  # noqa: F401
from pgcnn_jax.kernels._factory import make_kernel_net
from pgcnn_jax.kernels._geometry import check_kernel_size, disc_mask, relative_positions
from pgcnn_jax.kernels._mfn import MFN_KINDS, FourierNet, GaborNet, GaborOptions, MAGNet, MFNOptions
from pgcnn_jax.kernels._nets import SIREN, MLPKernel, SirenOptions
from pgcnn_jax.kernels._registry import (
    FactorInit,
    NoOptions,
    kernel_net_entry,
    register_kernel_net,
    registered_kernel_nets,
)
from pgcnn_jax.kernels._spec import (
    FACTOR_INITS,
    RENDERS,
    KernelSpec,
    SeparableKernelNet,
    as_kernel_spec,
)

#: names of the built-in kernel nets (:func:`registered_kernel_nets` also lists those
#: registered later)
KERNEL_NAMES = registered_kernel_nets()

__all__ = [
    "FACTOR_INITS",
    "KERNEL_NAMES",
    "MFN_KINDS",
    "RENDERS",
    "FactorInit",
    "FourierNet",
    "GaborNet",
    "GaborOptions",
    "KernelSpec",
    "MAGNet",
    "MFNOptions",
    "MLPKernel",
    "NoOptions",
    "SIREN",
    "SeparableKernelNet",
    "SirenOptions",
    "as_kernel_spec",
    "check_kernel_size",
    "disc_mask",
    "kernel_net_entry",
    "make_kernel_net",
    "register_kernel_net",
    "registered_kernel_nets",
    "relative_positions",
]
