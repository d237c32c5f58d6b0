"""Continuous kernel networks, their spec and the geometry they are evaluated on."""

from pgcnn_jax.kernels._factory import make_kernel_net
from pgcnn_jax.kernels._geometry import check_kernel_size, disc_mask, relative_positions
from pgcnn_jax.kernels._mfn import MFN_KINDS, FourierNet, GaborNet, MAGNet
from pgcnn_jax.kernels._nets import SIREN, MLPKernel
from pgcnn_jax.kernels._spec import (
    FACTOR_INITS,
    KERNEL_NAMES,
    RENDERS,
    KernelSpec,
    SeparableKernelNet,
    as_kernel_spec,
)

__all__ = [
    "FACTOR_INITS",
    "KERNEL_NAMES",
    "MFN_KINDS",
    "RENDERS",
    "FourierNet",
    "GaborNet",
    "KernelSpec",
    "MAGNet",
    "SIREN",
    "MLPKernel",
    "SeparableKernelNet",
    "as_kernel_spec",
    "check_kernel_size",
    "disc_mask",
    "make_kernel_net",
    "relative_positions",
]
