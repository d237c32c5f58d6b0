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

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgcnn_jax.groups import Group
from pgcnn_jax.kernels import RENDERS
from pgcnn_jax.kernels._geometry import disc_inside
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
    "DEPTHWISE_METHODS",
    "GROUP_RENDERERS",
    "depthwise_conv2d",
    "depthwise_method",
    "disc_taps",
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


#: Formulations of :func:`depthwise_conv2d`: ``"conv"``, one grouped
#: ``lax.conv_general_dilated`` (cuDNN's depthwise kernels on GPUs); ``"taps"``, one shifted
#: multiply-add per kernel tap with a hand-written VJP (XLA:CPU runs grouped convs and their
#: batch-grouped kernel gradients at well under 1 GFLOP/s, the taps at the speed of memory).
DEPTHWISE_METHODS = ("conv", "taps")
_DEPTHWISE_ENV = "PGCNN_DEPTHWISE"


def depthwise_method(method: str | None = None) -> str:
    """The depthwise formulation to use: ``method`` if given, else the environment variable
    ``PGCNN_DEPTHWISE`` if set, else ``"taps"`` on CPU and ``"conv"`` on other backends. Read
    at trace time: set the variable before the first step is traced (JAX caches the traces of
    a jitted function; ``jax.clear_caches()`` forgets them). ``ValueError`` for a name not in
    :data:`DEPTHWISE_METHODS`."""
    if method is None:
        method = os.environ.get(_DEPTHWISE_ENV) or None
        where = f"{_DEPTHWISE_ENV}={method!r}"
    else:
        where = f"method {method!r}"
    if method is None:
        return "taps" if jax.default_backend() == "cpu" else "conv"
    if method not in DEPTHWISE_METHODS:
        raise ValueError(f"unknown depthwise {where}; expected one of {DEPTHWISE_METHODS}")
    return method


def _tap_sum(xp: jax.Array, w: jax.Array, taps, ho: int, wo: int) -> jax.Array:
    """``sum_{(i, j) in taps} xp[:, i:i+ho, j:j+wo, :] * w[:, i, j]`` (``w [S, k, k, G]``
    broadcast over the batch when ``S = 1``)."""
    y = None
    for i, j in taps:
        t = xp[:, i : i + ho, j : j + wo, :] * w[:, i, j, None, None, :]
        y = t if y is None else y + t
    return y


def _pad_hw(x: jax.Array, lo: int, hi: int | None = None) -> jax.Array:
    hi = lo if hi is None else hi
    return jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_taps(x: jax.Array, w: jax.Array, pad: int, taps: tuple) -> jax.Array:
    """Depthwise cross-correlation as shifted multiply-adds over ``taps`` (the ``(i, j)``
    where ``w`` may be non-zero), zero padding ``pad`` on each side."""
    k = w.shape[1]
    xp = _pad_hw(x, pad)
    return _tap_sum(xp, w, taps, xp.shape[1] - k + 1, xp.shape[2] - k + 1)


def _depthwise_taps_fwd(x, w, pad, taps):
    return _depthwise_taps(x, w, pad, taps), (x, w)


def _depthwise_taps_bwd(pad, taps, res, gy):
    """``dx``: the full correlation of ``gy`` with the flipped kernel (shifted multiply-adds
    again); ``dw[s, i, j]``: ``sum_{h, w} xp[h + i, w + j] gy[h, w]``, accumulated one output
    row at a time (a ``scan``: each row's ``k`` input rows stay in cache for all taps)."""
    x, w = res
    b, hh, ww, g = x.shape
    s, k = w.shape[0], w.shape[1]
    ho, wo = gy.shape[1], gy.shape[2]
    q = k - 1 - pad
    flipped = tuple((k - 1 - i, k - 1 - j) for i, j in taps)
    dx = _tap_sum(_pad_hw(gy, q), w[:, ::-1, ::-1, :], flipped, hh, ww)
    xp = _pad_hw(x, pad)

    def row(acc, r):
        xs = jax.lax.dynamic_slice_in_dim(xp, r, k, axis=1)  # [B, k, Wp, G]
        gr = jax.lax.dynamic_slice_in_dim(gy, r, 1, axis=1)  # [B, 1, Wo, G]
        part = jnp.stack([jnp.sum(xs[:, i, j : j + wo, :] * gr[:, 0], axis=1) for i, j in taps])
        return acc + part, None

    acc = jnp.zeros((len(taps), b, g), jnp.result_type(x, gy))
    acc, _ = jax.lax.scan(row, acc, jnp.arange(ho))  # [T, B, G]
    if s == 1:
        acc = jnp.sum(acc, axis=1, keepdims=True)
    dw = jnp.zeros((s, k, k, g), acc.dtype)
    rows, cols = (jnp.asarray(v) for v in zip(*taps, strict=True))
    dw = dw.at[:, rows, cols, :].set(acc.transpose(1, 0, 2))
    return dx.astype(x.dtype), dw.astype(w.dtype)


_depthwise_taps.defvjp(_depthwise_taps_fwd, _depthwise_taps_bwd)


def depthwise_conv2d(
    x: jax.Array,
    weight: jax.Array,
    padding: str,
    precision: str | None = None,
    *,
    method: str | None = None,
    taps: tuple[tuple[int, int], ...] | None = None,
) -> jax.Array:
    """Depthwise cross-correlation of ``x [B, H, W, G]`` with ``weight [S, k, k, G]`` (channel
    ``g`` of the output is channel ``g`` of ``x`` filtered by ``weight[..., g]``); with
    ``S = B`` each example has its own filters.

    ``method`` (:func:`depthwise_method`): ``"conv"`` folds the batch into the channels of one
    grouped conv when ``S = B``; ``"taps"`` adds one shifted product per tap (with
    ``precision="bfloat16"`` the conv is used). ``taps`` (``"taps"`` only): the ``(i, j)``
    taps where ``weight`` may be non-zero (default: all ``k^2``), e.g. the disc of a rotated
    kernel. The output is the same when ``weight`` is zero elsewhere; the gradient of
    ``weight`` at the other taps is returned as zero, so pass ``taps`` only for a weight
    masked to zero there (whose gradient at those taps the mask discards anyway).
    """
    check_precision(precision)
    b, hh, ww, g = x.shape
    s, k = weight.shape[0], weight.shape[1]
    if weight.shape[-1] != g or s not in (1, b) or weight.ndim != 4 or weight.shape[2] != k:
        raise ValueError(f"depthwise weight of shape {weight.shape} for features {x.shape}")
    pad = padding.upper()
    if pad not in ("SAME", "VALID"):
        raise ValueError(f"unknown padding {padding!r}; expected 'same' or 'valid'")
    if depthwise_method(method) == "taps" and precision != "bfloat16":
        if k % 2 != 1:
            raise ValueError(f"the taps depthwise conv needs an odd kernel size, got {k}")
        taps = tuple((i, j) for i in range(k) for j in range(k)) if taps is None else taps
        if not taps or any(not (0 <= i < k and 0 <= j < k) for i, j in taps):
            raise ValueError(f"taps {taps!r} must be a non-empty set of (i, j) in [0, {k})")
        return _depthwise_taps(x, weight, k // 2 if pad == "SAME" else 0, tuple(taps))
    if s == 1:
        return _conv(x, weight[0][:, :, None, :], pad, precision, feature_group_count=g)
    xf = x.transpose(1, 2, 0, 3).reshape(1, hh, ww, b * g)
    wf = weight.transpose(1, 2, 0, 3).reshape(k, k, 1, b * g)
    y = _conv(xf, wf, pad, precision, feature_group_count=b * g)[0]
    return y.reshape(y.shape[0], y.shape[1], b, g).transpose(2, 0, 1, 3)


def disc_taps(kernel_size: int) -> tuple[tuple[int, int], ...]:
    """The ``(i, j)`` taps of :func:`~pgcnn_jax.kernels.disc_mask` (29 of 49 for 7x7)."""
    mask = disc_inside(kernel_size)
    return tuple((int(i), int(j)) for i, j in zip(*np.nonzero(mask), strict=True))


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
    # isometries: psi_S is zero off the fixed disc (_tap_weights), so only its taps are added
    taps = disc_taps(kernel_size) if kr == kernel_size else None
    y = depthwise_conv2d(z, spatial, padding, precision, taps=taps)
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
