r"""Group-convolution renderers, one per :data:`pgcnn_jax.kernels.RENDERS` (chosen by the
layer's :class:`~pgcnn_jax.kernels.KernelSpec`).

Every renderer maps features ``x [B, H, W, N_in C_in]`` on ``g_in`` to ``[B, H', W',
N_out C_out]`` on ``g_out`` and returns the squared Frobenius norm of the (equivalent joint)
kernel for the kernel-norm penalty.

* ``joint``: one net on ``[A(u)^{-1} p, u^{-1} v]`` renders the dense HWIO kernel
  (:func:`~pgcnn_jax.nn.group_kernel`), then one convolution.
* ``separable`` (Knigge, Romero & Bekkers, ICML 2022):

  .. math:: \psi(p, u, v)_{oc} = \psi_S(A(u)^{-1} p)_o\, \psi_G(u^{-1} v)_{oc},

  so :math:`h(x, u)_o = \sum_p \psi_S(A(u)^{-1} p)_o \sum_{v, c} \psi_G(u^{-1} v)_{oc}
  f(x + p, v)_c`: a 1x1 conv mixing ``N_in C_in -> N_out C_out`` with ``psi_G`` (pair-masked)
  followed by a depthwise ``k x k`` conv (one rotated, disc-masked ``psi_S`` kernel per output
  element and channel). About ``k^2`` fewer multiply-adds than the joint kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from pgcnn_jax.groups import Group
from pgcnn_jax.kernels import RENDERS
from pgcnn_jax.nn._functional import (
    _apply_net,
    _conv,
    _rotated_positions,
    _tap_weights,
    check_precision,
    conv2d,
    conv2d_per_example,
    group_kernel,
    relative_inputs,
    sum_of_squares,
)

__all__ = [
    "GROUP_RENDERERS",
    "depthwise_conv2d",
    "joint_group_conv",
    "render_group_conv",
    "separable_group_conv",
    "separable_kernels",
]


def joint_group_conv(
    net,
    group: Group,
    x: jax.Array,
    g_out: jax.Array,
    g_in: jax.Array,
    mask_out: jax.Array,
    mask_in: jax.Array,
    *,
    kernel_size: int,
    in_features: int,
    out_features: int,
    padding: str,
    precision: str | None = None,
    chunked: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The joint renderer: :func:`group_kernel` and one :func:`conv2d`; with ``chunked``
    (``S = B``) the per-example kernels are rendered and applied a chunk of examples at a time
    (:func:`conv2d_per_example`). Returns ``(y, squared norm of the kernel(s))``."""
    sizes = (kernel_size, in_features, out_features)
    if not chunked:
        weight = group_kernel(net, group, g_out, g_in, mask_out, mask_in, *sizes)
        return conv2d(x, weight, padding, precision=precision), sum_of_squares(weight)

    def render(go, gi, mo, mi):
        return group_kernel(net, group, go[None], gi[None], mo[None], mi[None], *sizes)[0]

    b = x.shape[0]
    operands = tuple(
        jnp.broadcast_to(a, (b, *a.shape[1:])) for a in (g_out, g_in, mask_out, mask_in)
    )
    return conv2d_per_example(x, render, operands, padding, precision=precision)


def separable_kernels(
    net,
    group: Group,
    g_out: jax.Array,
    g_in: jax.Array,
    mask_out: jax.Array,
    mask_in: jax.Array,
    kernel_size: int,
    in_features: int,
    out_features: int,
) -> tuple[jax.Array, jax.Array]:
    """The two factors of a separable kernel (``net``: a
    :class:`~pgcnn_jax.kernels.SeparableKernelNet`):

    * ``psi_S [S, N_out, k, k, C_out]``: ``net.spatial(A(u)^{-1} p)``, disc-masked, zero on
      invalid output elements;
    * ``psi_G [S, N_out, N_in, C_out, C_in]``: ``net.group(normalize(u^{-1} v))``, zero on
      pairs with an invalid element.

    The joint kernel is ``psi[s, u, v, p, o, c] = psi_S[s, u, p, o] psi_G[s, u, v, o, c]``.
    """
    k, co, ci = kernel_size, out_features, in_features
    rel, pair_mask = relative_inputs(group, g_out, g_in, mask_out, mask_in)
    s, n_out, n_in = pair_mask.shape
    psi_g = _apply_net(net.group, rel, pair_mask).reshape(s, n_out, n_in, co, ci)
    psi_g = psi_g * pair_mask[..., None, None]
    m_out = jnp.broadcast_to(mask_out, (s, n_out))
    out_pos = _rotated_positions(group, g_out, k)  # [S or 1, No, k', k', 2]
    kr = out_pos.shape[2]  # k, or the enlarged grid of a scaling group
    weight = _tap_weights(group, g_out, out_pos, k)  # support mask x measure
    pos = jnp.broadcast_to(out_pos, (s, n_out, kr, kr, 2))
    psi_s = _apply_net(net.spatial, pos, m_out[:, :, None, None]).reshape(s, n_out, kr, kr, co)
    psi_s = psi_s * (weight[..., None] * m_out[:, :, None, None, None])
    return psi_s, psi_g


def depthwise_conv2d(
    x: jax.Array, weight: jax.Array, padding: str, precision: str | None = None
) -> jax.Array:
    """Depthwise cross-correlation of ``x [B, H, W, G]`` with ``weight [S, k, k, G]`` (channel
    ``g`` of the output is channel ``g`` of ``x`` filtered by ``weight[..., g]``); with
    ``S = B`` each example has its own filters (the batch is folded into the channels: one
    depthwise conv of ``B G`` channels)."""
    check_precision(precision)
    b, hh, ww, g = x.shape
    s, k = weight.shape[0], weight.shape[1]
    if weight.shape[-1] != g or s not in (1, b):
        raise ValueError(f"depthwise weight of shape {weight.shape} for features {x.shape}")
    pad = padding.upper()
    if s == 1:
        return _conv(x, weight[0][:, :, None, :], pad, precision, feature_group_count=g)
    xf = x.transpose(1, 2, 0, 3).reshape(1, hh, ww, b * g)
    wf = weight.transpose(1, 2, 0, 3).reshape(k, k, 1, b * g)
    y = _conv(xf, wf, pad, precision, feature_group_count=b * g)[0]
    return y.reshape(y.shape[0], y.shape[1], b, g).transpose(2, 0, 1, 3)


def separable_group_conv(
    net,
    group: Group,
    x: jax.Array,
    g_out: jax.Array,
    g_in: jax.Array,
    mask_out: jax.Array,
    mask_in: jax.Array,
    *,
    kernel_size: int,
    in_features: int,
    out_features: int,
    padding: str,
    precision: str | None = None,
    chunked: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The separable renderer: a 1x1 group mixing with ``psi_G`` then a depthwise conv with the
    rotated ``psi_S`` (:func:`separable_kernels`). Per-example factors (``S = B``) are all
    rendered at once (they are ``k^2`` times smaller than a joint kernel; ``chunked`` is
    ignored): the mixing is a :func:`conv2d` per example, the depthwise conv one conv over the
    batch folded into channels. Returns ``(y, squared Frobenius norm of the equivalent joint
    kernel(s))``, computed from the factors as ``sum_{s,u,o} |psi_S[s,u,:,:,o]|^2
    |psi_G[s,u,:,o,:]|^2``."""
    del chunked
    psi_s, psi_g = separable_kernels(
        net, group, g_out, g_in, mask_out, mask_in, kernel_size, in_features, out_features
    )
    s, n_out, n_in, co, ci = psi_g.shape
    mixing = psi_g.transpose(0, 2, 4, 1, 3).reshape(s, 1, 1, n_in * ci, n_out * co)
    z = conv2d(x, mixing, "valid", precision=precision)  # [B, H, W, No Co]
    kr = psi_s.shape[2]
    spatial = psi_s.transpose(0, 2, 3, 1, 4).reshape(s, kr, kr, n_out * co)
    y = depthwise_conv2d(z, spatial, padding, precision)
    sq = jnp.sum(jnp.sum(jnp.square(psi_s), axis=(2, 3)) * jnp.sum(jnp.square(psi_g), axis=(2, 4)))
    return y, sq


#: Group-conv renderers by :attr:`KernelSpec.render <pgcnn_jax.kernels.KernelSpec.render>`.
GROUP_RENDERERS: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {
    "joint": joint_group_conv,
    "separable": separable_group_conv,
}
if tuple(GROUP_RENDERERS) != RENDERS:  # pragma: no cover - a registration error at import
    raise ImportError(f"group renderers {tuple(GROUP_RENDERERS)} do not match RENDERS {RENDERS}")


def render_group_conv(render: str, *args, **kwargs) -> tuple[jax.Array, jax.Array]:
    """``GROUP_RENDERERS[render](*args, **kwargs)``; ``ValueError`` for an unknown ``render``."""
    if render not in GROUP_RENDERERS:
        raise ValueError(f"unknown render {render!r}; expected one of {tuple(GROUP_RENDERERS)}")
    return GROUP_RENDERERS[render](*args, **kwargs)
