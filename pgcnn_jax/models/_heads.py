"""CKResNet readouts (REFERENCE 4.1-4.2): global max pooling, the T(2) final conv and the
learnable ("MLP") pooling over ``[N, h, w]``.

The T(2) final conv is a group conv on the single identity element. For SE2 this is exactly
the reference (``last_conv_T2=True``: elements replaced by zeros, i.e. angle 0). **Deliberate
difference for E2 / mirror:** the reference's zero tensor also sets the mirror sign to 0, so
its matrix is ``[[1, 0], [0, 0]]`` and the kernel is evaluated at ``(row, 0)`` (constant along
columns, never masked, REFERENCE 4.2). Here the element is the proper identity ``(0, +1)``:
a genuine translation-only conv with the circular mask. Parameter counts are unchanged (the
kernel net still has ``2 + d`` inputs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.groups import Group, get_group
from pgcnn_jax.kernels import KernelSpec, as_kernel_spec, check_kernel_size
from pgcnn_jax.models._common import torch_linear
from pgcnn_jax.nn import (
    GroupFeatures,
    KernelNorm,
    check_precision,
    conv2d,
    group_kernel,
    group_max_pool,
    group_mean_pool,
    safe_norm,
)


class T2FinalConv(nnx.Module):
    """Final conv of the T(2)-last-layer head: the features are averaged over the valid group
    slots (``N -> 1``), then convolved on the single identity element (deterministic, not
    partial), ``[B, H, W, N, C_in] -> [B, H', W', 1, C_out]``. ``kernel`` is a
    :class:`~pgcnn_jax.kernels.KernelSpec` (or a kernel-net name) rendered jointly: a spec with
    ``render="separable"`` raises ``ValueError``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        group: Group | str,
        kernel_size: int,
        padding: str = "valid",
        kernel: KernelSpec | str = "siren",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.kernel = as_kernel_spec(kernel)
        if self.kernel.render != "joint":
            raise ValueError(
                f"T2FinalConv renders its kernel jointly only, got kernel render "
                f"{self.kernel.render!r}; pass kernel=spec.replace(render='joint')"
            )
        self.group = get_group(group)
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size, self.padding = check_kernel_size(kernel_size), padding
        self.precision = check_precision(precision)
        self.kernel_norm = KernelNorm(jnp.zeros(()))
        self.kernel_net = self.kernel.make_group_net(
            self.group.dim, in_features, out_features, rngs=rngs
        )
        self.bias = nnx.Param(jnp.zeros((out_features,)))

    def __call__(self, h: GroupFeatures) -> GroupFeatures:
        if h.values.ndim != 5 or h.values.shape[-1] != self.in_features:
            raise ValueError(
                f"T2FinalConv expects values [B, H, W, N, {self.in_features}], got {h.values.shape}"
            )
        v = group_mean_pool(h)  # [B, H, W, C_in]
        e = self.group.identity((1, 1))
        ones = jnp.ones((1, 1))
        weight = group_kernel(
            self.kernel_net,
            self.group,
            e,
            e,
            ones,
            ones,
            self.kernel_size,
            self.in_features,
            self.out_features,
        )
        bias = self.bias[...]
        self.kernel_norm[...] = safe_norm(weight) + safe_norm(bias)
        y = conv2d(v, weight, self.padding, precision=self.precision)
        y = y.reshape(*y.shape[:3], 1, self.out_features) + bias.reshape(1, 1, 1, 1, -1)
        return GroupFeatures(y, e, ones)


class MLPPooling(nnx.Module):
    """Learnable pooling (``net.learnable_final_pooling``): ``Linear(N h w -> 1, bias)`` applied
    to each channel's flattened ``[N, h, w]`` map (weights shared over channels),
    ``[B, h, w, N, C] -> [B, C]``. PyTorch default initialisation."""

    def __init__(self, num_elements: int, spatial: tuple[int, int], *, rngs: nnx.Rngs):
        self.num_elements = num_elements
        self.spatial = tuple(int(s) for s in spatial)
        if len(self.spatial) != 2 or min(self.spatial) < 1:
            raise ValueError(f"final_spatial_dim must be two positive ints, got {spatial!r}")
        self.linear = torch_linear(num_elements * self.spatial[0] * self.spatial[1], 1, rngs)

    def __call__(self, h: GroupFeatures) -> jax.Array:
        v = h.values
        b, hh, ww, n, c = v.shape
        if (hh, ww) != self.spatial or n != self.num_elements:
            raise ValueError(
                f"MLP pooling was built for [N, h, w] = [{self.num_elements}, "
                f"{self.spatial[0]}, {self.spatial[1]}] (final_spatial_dim) but the final map is "
                f"[{n}, {hh}, {ww}]"
            )
        flat = v.transpose(0, 4, 3, 1, 2).reshape(b, c, n * hh * ww)  # reference [N, h, w] order
        return self.linear(flat)[..., 0]


def global_max_pool(h: GroupFeatures) -> jax.Array:
    """Max over valid group slots and space: ``[B, H, W, N, C] -> [B, C]``."""
    return jnp.max(group_max_pool(h), axis=(1, 2))
