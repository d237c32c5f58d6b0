"""Pure functions: kernel rendering and the convolutions (DESIGN 3, REFERENCE 3.1-3.3).

A lifting or group convolution is one ``lax.conv_general_dilated`` with an HWIO kernel
``[k, k, N_in C_in, N_out C_out]`` rendered by the kernel net on the relative elements. With
per-sample elements (``S = B``) the convolution is ``vmap``-ed over the batch.

.. math:: h(x, u) = \\sum_{v} \\sum_{p} \\psi(A(u)^{-1} p,\\; u^{-1} v)\\, f(x + p, v)

(cross-correlation, no Monte Carlo normalisation, REFERENCE 9.1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgcnn_jax.groups import Group
from pgcnn_jax.kernels import disc_mask, relative_positions

KernelNet = Callable[[jax.Array], jax.Array]

#: Convolution precisions: ``None`` is ``lax``'s default (what every conv used before the
#: setting existed: full float32 on CPU, TF32 tensor cores on recent NVIDIA GPUs, honouring
#: ``jax_default_matmul_precision``); ``"float32"`` forces full float32
#: (``Precision.HIGHEST``), ``"tf32"`` asks for ``Precision.DEFAULT`` (TF32 on GPUs that have
#: it, float32 on CPU), ``"bfloat16"`` casts both operands to bfloat16 and accumulates and
#: returns float32 (``preferred_element_type``).
CONV_PRECISIONS = (None, "float32", "tf32", "bfloat16")


def check_precision(precision: str | None) -> str | None:
    """Returns ``precision`` if it is one of :data:`CONV_PRECISIONS`, else raises ``ValueError``."""
    if precision not in CONV_PRECISIONS:
        raise ValueError(f"unknown conv precision {precision!r}; expected one of {CONV_PRECISIONS}")
    return precision


def rendered_kernel_size(group: Group, num_elements: int, kernel_size: int) -> int:
    """Taps ``k'`` per side of the kernels a conv with ``kernel_size = k`` renders on
    ``group``: ``k`` for groups acting by isometries (``kernel_extent = 1``); for a group that
    stretches kernels by up to ``e = kernel_extent > 1`` (scalings) the grid is ENLARGED to the
    smallest odd ``k' >= (k - 1) e + 1``, spanning ``[-e, e]`` (at least) at the spacing
    ``2 / (k - 1)`` of ``k`` taps on ``[-1, 1]``: the kernel at scale 1 is sampled where it was,
    the kernel at scale ``e`` covers ``e`` times more pixels. "same" padding keeps ``H, W``;
    "valid" padding trims ``(k' - 1) / 2`` pixels per side."""
    extent = float(group.kernel_extent(num_elements))
    if not extent >= 1.0 or not math.isfinite(extent):
        raise ValueError(f"kernel_extent of group {group.name!r} must be >= 1, got {extent}")
    if extent == 1.0 or kernel_size <= 1:
        return kernel_size
    size = math.ceil((kernel_size - 1) * extent + 1 - 1e-6)
    return size + 1 - size % 2


@functools.lru_cache
def _enlarged_positions(kernel_size: int, size: int) -> np.ndarray:
    """``[k', k', 2]`` tap positions at the spacing ``2 / (k - 1)`` of ``k`` taps on
    ``[-1, 1]``, centred (the ``(row, col)`` layout of :func:`relative_positions`)."""
    axis = (np.arange(size) - (size - 1) / 2) * (2.0 / (kernel_size - 1))
    rows, cols = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([rows, cols], axis=-1)


def _tap_positions(group: Group, num_elements: int, kernel_size: int) -> jax.Array:
    """The rendered grid ``p``, ``[k', k', 2]`` (:func:`rendered_kernel_size`)."""
    size = rendered_kernel_size(group, num_elements, kernel_size)
    if size == kernel_size:
        return relative_positions(kernel_size)
    return jnp.asarray(_enlarged_positions(kernel_size, size), jnp.float32)


def _rotated_positions(group: Group, elements: jax.Array, kernel_size: int) -> jax.Array:
    """``A(u)^{-1} p`` for every element: ``[S, N, d] -> [S, N, k', k', 2]``."""
    a_inv = group.inverse_matrix(elements)
    taps = _tap_positions(group, elements.shape[1], kernel_size)
    return jnp.einsum("snab,yxb->snyxa", a_inv, taps)


def _tap_weights(group: Group, elements: jax.Array, pos: jax.Array, kernel_size: int):
    """``[S, N, k', k']``: the support mask of the kernel at every element times its measure
    (:meth:`~pgcnn_jax.groups.Group.kernel_measure`). The support is the unit disc in
    canonical coordinates, ``|A(u)^{-1} p| <= 1``; groups acting by isometries use the fixed
    :func:`disc_mask` (the same for every element, bit for bit what it always was)."""
    measure = group.kernel_measure(elements)[:, :, None, None]
    if pos.shape[2] == kernel_size:
        return disc_mask(kernel_size)[None, None] * measure
    inside = jnp.sum(jnp.square(jax.lax.stop_gradient(pos)), axis=-1) <= (1.0 + 1e-5) ** 2
    return inside.astype(jnp.float32) * measure


def _apply_net(net: KernelNet, x: jax.Array, mask: jax.Array) -> jax.Array:
    """``net(x)``; nets whose output at a point depends on the other points (an MLP kernel's
    BatchNorm, ``net.reduces_over_points``) also get the ``[...]`` validity mask of the points,
    so that masked elements do not enter their statistics (DESIGN 4)."""
    if getattr(net, "reduces_over_points", False):
        return net(x, mask=jnp.broadcast_to(mask, x.shape[:-1]))
    return net(x)


def lifting_kernel(
    net: KernelNet,
    group: Group,
    elements: jax.Array,
    kernel_size: int,
    in_features: int,
    out_features: int,
) -> jax.Array:
    """Renders the lifting kernel, ``[S, N, d] -> [S, k', k', C_in, N C_out]``: the kernel
    net at ``A(u)^{-1} p`` on the unit disc, times the measure ``|det A(u)|^{-1}``
    (``k' = k`` for groups acting by isometries, :func:`rendered_kernel_size`)."""
    s, n = elements.shape[:2]
    pos = _rotated_positions(group, elements, kernel_size)
    k = pos.shape[2]
    psi = net(pos)
    psi = psi.reshape(s, n, k, k, out_features, in_features)
    psi = psi * _tap_weights(group, elements, pos, kernel_size)[:, :, :, :, None, None]
    return psi.transpose(0, 2, 3, 5, 1, 4).reshape(s, k, k, in_features, n * out_features)


def relative_inputs(
    group: Group, g_out: jax.Array, g_in: jax.Array, mask_out: jax.Array, mask_in: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The group part of a group-conv kernel's input: ``normalize(u_i^{-1} v_j)``
    ``[S, N_out, N_in, d]`` and the pair mask ``mask_out[i] mask_in[j]`` ``[S, N_out, N_in]``
    (``S`` the larger of the two sample counts)."""
    s = max(g_out.shape[0], g_in.shape[0])
    n_out, n_in = g_out.shape[1], g_in.shape[1]
    rel = group.normalize(group.relative(g_out, g_in))  # [S, No, Ni, d]
    rel = jnp.broadcast_to(rel, (s, *rel.shape[1:]))
    pair_mask = mask_out[:, :, None] * mask_in[:, None, :]  # [S, No, Ni]
    return rel, jnp.broadcast_to(pair_mask, (s, n_out, n_in))


def group_kernel(
    net: KernelNet,
    group: Group,
    g_out: jax.Array,
    g_in: jax.Array,
    mask_out: jax.Array,
    mask_in: jax.Array,
    kernel_size: int,
    in_features: int,
    out_features: int,
) -> jax.Array:
    """Renders a group-conv kernel ``[S, k', k', N_in C_in, N_out C_out]``.

    The kernel-net input at (output ``i``, input ``j``, tap ``p``) is
    ``[A(u_i)^{-1} p, normalize(u_i^{-1} v_j)]``; the output is masked to the unit disc in
    those canonical coordinates and multiplied by ``|det A(u_i)|^{-1}`` (``k' = k`` for groups
    acting by isometries, :func:`rendered_kernel_size`); slices of invalid elements are zeroed.
    ``kernel_size = 0`` renders a pointwise (1x1) kernel from the group part only.
    """
    rel, pair_mask = relative_inputs(group, g_out, g_in, mask_out, mask_in)
    s, n_out, n_in = pair_mask.shape
    if kernel_size == 0:
        psi = _apply_net(net, rel, pair_mask).reshape(s, n_out, n_in, out_features, in_features)
        psi = psi * pair_mask[..., None, None]
        return psi.transpose(0, 2, 4, 1, 3).reshape(s, 1, 1, n_in * in_features, -1)
    out_pos = _rotated_positions(group, g_out, kernel_size)
    k = out_pos.shape[2]
    weight = _tap_weights(group, g_out, out_pos, kernel_size)  # [S or 1, No, k, k]
    pos = jnp.broadcast_to(out_pos, (s, n_out, k, k, 2))
    pos = jnp.broadcast_to(pos[:, :, None], (s, n_out, n_in, k, k, 2))
    rel = jnp.broadcast_to(rel[:, :, :, None, None, :], (s, n_out, n_in, k, k, rel.shape[-1]))
    point_mask = pair_mask[:, :, :, None, None]  # every tap of a valid pair is evaluated
    psi = _apply_net(net, jnp.concatenate([pos, rel], axis=-1), point_mask)
    psi = psi.reshape(s, n_out, n_in, k, k, out_features, in_features)
    disc = weight[:, :, None, :, :, None, None]
    psi = psi * (disc * pair_mask[:, :, :, None, None, None, None])
    # [S, No, Ni, k, k, Co, Ci] -> [S, k, k, Ni, Ci, No, Co]
    psi = psi.transpose(0, 3, 4, 2, 6, 1, 5)
    return psi.reshape(s, k, k, n_in * in_features, n_out * out_features)


def conv2d(
    x: jax.Array,
    weight: jax.Array,
    padding: str,
    per_sample: str = "auto",
    precision: str | None = None,
) -> jax.Array:
    """Cross-correlation of ``x [B, H, W, I]`` with ``weight [S, k, k, I, O]`` (S = 1 or B).

    With ``S = B`` each example has its own kernel: ``per_sample="vmap"`` batches the convs
    (a grouped conv), ``"map"`` loops over examples; ``"auto"`` loops on CPU and batches on
    accelerators. Both compute the same numbers. ``precision`` is one of
    :data:`CONV_PRECISIONS`; the output is float32 (for float32 inputs) in every case.
    """
    if per_sample not in ("auto", "map", "vmap"):
        raise ValueError(f"per_sample must be 'auto', 'map' or 'vmap', got {per_sample!r}")
    check_precision(precision)

    def one(xb, w):
        return _conv(xb, w, padding.upper(), precision)

    if weight.shape[0] == 1:
        return one(x, weight[0])
    if per_sample == "map" or (per_sample == "auto" and jax.default_backend() == "cpu"):
        # XLA:CPU lowers the batched conv of ``vmap`` (a grouped conv) about 10x slower than a
        # loop of plain convs (measured: 21 s vs 2.0 s for a [64, 14, 14, 80] fwd+bwd).
        return jax.lax.map(lambda a: one(a[0][None], a[1])[0], (x, weight))
    return jax.vmap(lambda xb, w: one(xb[None], w)[0])(x, weight)


def per_example_chunk() -> int:
    """Examples per chunk of :func:`conv2d_per_example` on the default backend: 1 on CPU (a
    loop of plain convs, see :func:`conv2d`), 8 on accelerators (a batched conv per chunk;
    not tuned yet)."""
    return 1 if jax.default_backend() == "cpu" else 8


def sum_of_squares(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(x))


def conv2d_per_example(
    x: jax.Array,
    render: Callable[..., jax.Array],
    operands: tuple[jax.Array, ...],
    padding: str,
    *,
    precision: str | None = None,
    chunk: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Per-example kernels rendered and applied chunk by chunk, never all ``B`` at once.

    ``render(*ops)`` maps one example's operands (``operands`` without their leading batch
    axis, e.g. its elements ``[N, d]`` and mask ``[N]``) to its kernel ``[k, k, I, O]``. A
    ``lax.map`` over chunks of ``chunk`` examples (default :func:`per_example_chunk`) renders
    each chunk's kernels and convolves the chunk's images ``x [B, H, W, I]`` with them; the body
    is rematerialised (``jax.checkpoint``), so the backward pass re-renders a chunk's kernels
    instead of keeping all ``B``. Same numbers as rendering every kernel first and calling
    :func:`conv2d` (to float rounding).

    Returns ``(y [B, H', W', O], sum of the squares of all B kernels)`` (the latter for the
    kernel-norm penalty).
    """
    b = x.shape[0]
    for op in operands:
        if op.shape[0] != b:
            raise ValueError(f"per-example operand of shape {op.shape} for a batch of {b}")
    check_precision(precision)
    chunk = per_example_chunk() if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")

    @jax.checkpoint
    def one(args):
        xb, ops = args
        w = render(*ops)
        return _conv(xb[None], w, padding.upper(), precision)[0], sum_of_squares(w)

    y, sq = jax.lax.map(one, (x, tuple(operands)), batch_size=min(chunk, b) if chunk > 1 else None)
    return y, jnp.sum(sq)


_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(
    x: jax.Array, w: jax.Array, padding: str, precision: str | None, feature_group_count: int = 1
) -> jax.Array:
    """One ``NHWC x HWIO`` cross-correlation at ``precision`` (``feature_group_count`` as in
    ``lax.conv_general_dilated``: ``w`` is ``[k, k, I / G, O]``)."""
    if precision == "bfloat16":
        return _bf16_conv(x, w, padding, feature_group_count)
    kw = {}
    if precision == "float32":
        kw = dict(precision=jax.lax.Precision.HIGHEST)
    elif precision == "tf32":
        kw = dict(precision=jax.lax.Precision.DEFAULT)
    if feature_group_count != 1:
        kw["feature_group_count"] = feature_group_count
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_DIMS, **kw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bf16_conv(x: jax.Array, w: jax.Array, padding: str, feature_group_count: int) -> jax.Array:
    """Conv of bfloat16 copies of ``x`` and ``w``, accumulated and returned in their common
    (float32) dtype. The backward convs take bfloat16 operands too (``lax``'s own transpose
    would promote them to float32 and run at float32 speed) and their results, rounded to
    bfloat16, come back in the input dtype."""
    return _bf16_conv_fwd(x, w, padding, feature_group_count)[0]


def _bf16_conv_fwd(x, w, padding, feature_group_count):
    dtype = jnp.result_type(x, w)
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    y = jax.lax.conv_general_dilated(
        xb,
        wb,
        (1, 1),
        padding,
        dimension_numbers=_DIMS,
        feature_group_count=feature_group_count,
        preferred_element_type=dtype,
    )
    return y, (xb, wb)


def _bf16_conv_bwd(padding, feature_group_count, residuals, g):
    xb, wb = residuals
    gb = g.astype(jnp.bfloat16)

    def conv(a, b):
        return jax.lax.conv_general_dilated(
            a,
            b,
            (1, 1),
            padding,
            dimension_numbers=_DIMS,
            feature_group_count=feature_group_count,
        )

    # The conv is linear in each operand: transposing it alone traces no primal conv.
    (dx,) = jax.linear_transpose(lambda a: conv(a, wb), xb)(gb)
    (dw,) = jax.linear_transpose(lambda b: conv(xb, b), wb)(gb)
    return dx.astype(g.dtype), dw.astype(g.dtype)


_bf16_conv.defvjp(_bf16_conv_fwd, _bf16_conv_bwd)
