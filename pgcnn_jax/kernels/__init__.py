"""Continuous kernel networks and the geometry they are evaluated on."""

from pgcnn_jax.kernels._factory import KERNEL_NAMES, make_kernel_net
from pgcnn_jax.kernels._geometry import check_kernel_size, disc_mask, relative_positions
from pgcnn_jax.kernels._mfn import MFN_KINDS, FourierNet, GaborNet, MAGNet
from pgcnn_jax.kernels._nets import SIREN, MLPKernel

__all__ = [
    "KERNEL_NAMES",
    "MFN_KINDS",
    "FourierNet",
    "GaborNet",
    "MAGNet",
    "SIREN",
    "MLPKernel",
    "check_kernel_size",
    "disc_mask",
    "make_kernel_net",
    "relative_positions",
]
