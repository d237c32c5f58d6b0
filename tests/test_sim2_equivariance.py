"""``sim2`` layers: exact rot90 equivariance (joint and separable kernels) and approximate scale
equivariance of the lifting and group convolutions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.groups import get_group
from pgcnn_jax.kernels import KernelSpec
from pgcnn_jax.nn import conv2d, group_kernel, lifting_kernel
from pgcnn_jax.testing import assert_equivariant, equivariance_error

LOG2 = math.log(2.0)


# ----------------------------------------------------------------------------- rot90
def test_rot90_equivariance_permutes_within_each_scale(key):
    g = get_group("sim2", num_scales=3)
    n = 12  # 4 rotations x 3 scales
    spec = KernelSpec(hidden=8)
    settings = dict(group=g, num_elements=n, kernel_size=3, sampling="deterministic", kernel=spec)
    lift = pg.nn.LiftingConv(2, 3, **settings, rngs=nnx.Rngs(0))
    conv = pg.nn.GroupConv(
        3,
        2,
        **settings,
        rngs=nnx.Rngs(1),
    )

    def net(x):
        h = lift(x)
        return conv(h.replace_values(jax.nn.relu(h.values)))

    x = jax.random.normal(key, (1, 7, 7, 2))
    assert len(assert_equivariant(net, x, g, atol=1e-5, rtol=1e-5)) == 3
    grid = g.grid(n)[None]
    for e in g.exact_elements():
        perm = np.asarray(g.permutation(grid, e))[0]
        np.testing.assert_array_equal(perm // 4, np.arange(n) // 4)  # the scale is kept
    # negative control: the quarter turn's prediction with the 180-degree permutation
    y, y_rot = net(x).values, net(g.act(x, (math.pi / 2,))).values
    wrong = np.asarray(g.permutation(grid, (math.pi,)))[0]
    pred = g.act(y, (math.pi / 2,))[:, :, :, wrong]
    err = float(jnp.linalg.norm(pred - y_rot) / jnp.linalg.norm(y_rot))
    assert err > 0.1, err
    assert equivariance_error(net, x, g, (math.pi / 2,)).relative_error < 1e-5


@pytest.mark.parametrize("separable", [False, True])
def test_rot90_equivariance_joint_and_separable(key, separable):
    """Quarter turns on scale base 2 (a 3x3 kernel rendered on 5x5 taps): the convolved
    features of a rotated input are the rotated, permuted features, for joint and separable
    kernels (separable kernels render ``psi_S`` on the enlarged grid with the scale measure)."""
    g = get_group("sim2", num_scales=2, scale_base=2.0)
    lift = pg.nn.LiftingConv(
        1, 2, group=g, num_elements=8, kernel_size=3, sampling="deterministic",
        kernel=KernelSpec(hidden=8), rngs=nnx.Rngs(0),
    )  # fmt: skip
    conv = pg.nn.GroupConv(
        2, 2, group=g, num_elements=8, kernel_size=3, sampling="deterministic",
        separable=separable, kernel=KernelSpec(hidden=8), rngs=nnx.Rngs(1),
    )  # fmt: skip
    assert conv.kernel.render == ("separable" if separable else "joint")
    x = jax.random.normal(key, (1, 9, 9, 1))
    assert len(assert_equivariant(lambda x: conv(lift(x)), x, g, atol=1e-5, rtol=1e-5)) == 3
    # negative control: a fixed spatial weighting of the input breaks it
    w = jax.random.uniform(jax.random.fold_in(key, 1), (1, 9, 9, 1))
    assert (
        equivariance_error(lambda x: conv(lift(x * w)), x, g, (math.pi / 2,)).relative_error > 1e-2
    )


# ----------------------------------------------------------------------------- scales
H = 41
C = (H - 1) // 2
_BLOBS = [(1.0, 2.0, -3.0, 2.0), (-0.7, -2.5, 1.5, 1.5), (0.5, 3.0, 3.5, 2.5), (0.8, -1, -2, 1.8)]


def _blobs(scale: float) -> jax.Array:
    """``f(p / scale)`` for a sum of Gaussian blobs ``f`` (2 channels), rendered on the grid."""
    rows, cols = np.meshgrid(np.arange(H) - C, np.arange(H) - C, indexing="ij")
    img = np.zeros((H, H, 2))
    for ch in range(2):
        for a, r0, c0, s in _BLOBS:
            a = a if ch == 0 else 0.3 - 0.5 * a
            d2 = (rows - scale * r0) ** 2 + (cols - scale * c0) ** 2
            img[..., ch] += a * np.exp(-d2 / (2 * (scale * s) ** 2))
    return jnp.asarray(img[None], jnp.float32)


def _rel(a, b) -> float:
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _at(features, step: int, radius: int):
    """``features [1, H, W, ...]`` at the centre ``+ step * m``, ``|m| <= radius``."""
    idx = C + step * np.arange(-radius, radius + 1)
    return features[0][np.ix_(idx, idx)]


# Smooth kernels (omega_0 = 3) on 7 x 7 taps: the Riemann sums of the pixel grid approximate
# the same integral at both scales. Measured (seed 0): lifting 0.051 (unshifted 0.38), group
# conv 0.057 (unshifted 0.41); SIREN's default omega_0 = 10 aliases on a 7 x 7 grid (~0.7).
SCALE_BOUND = 0.12
SMOOTH = dict(kernel_size=7, kernel=KernelSpec(hidden=16, options={"omega_0": 3.0}))


def test_lifting_is_approximately_scale_equivariant():
    """``L_g f`` with ``g`` the scaling by 2 (``f(p / 2)``): its lifted features at slot ``(j +
    1) R + k`` and position ``2 m`` match those of ``f`` at slot ``j R + k`` and ``m``."""
    g = get_group("sim2", num_scales=2, scale_base=2.0)
    lift = pg.nn.LiftingConv(
        2, 4, group=g, num_elements=4, sampling="deterministic", **SMOOTH, rngs=nnx.Rngs(0)
    )
    f0, f1 = lift(_blobs(1.0)).values, lift(_blobs(2.0)).values
    orig = _at(f0, 1, 6)[:, :, :2]
    shifted = _rel(_at(f1, 2, 6)[:, :, 2:], orig)
    unshifted = _rel(_at(f1, 2, 6)[:, :, :2], orig)
    assert shifted < SCALE_BOUND, shifted
    assert unshifted > 3 * SCALE_BOUND, unshifted


def test_group_conv_is_approximately_scale_equivariant():
    """Lift + group conv on features carried with their elements: the network on ``L_g f`` at
    the elements ``g u`` matches the network on ``f`` at ``u`` (position ``2 m`` vs ``m``). The
    group is truncated to its ``S`` scales, so a layer mixing all input scales is compared on
    shifted elements (rendered inside the grid of ``S = 3``), not on shifted slots."""
    g = get_group("sim2", num_scales=3, scale_base=2.0)
    lift = pg.nn.LiftingConv(2, 4, group=g, num_elements=3, **SMOOTH, rngs=nnx.Rngs(0))
    conv = pg.nn.GroupConv(4, 3, group=g, num_elements=3, **SMOOTH, rngs=nnx.Rngs(1))
    ones = jnp.ones((1, 2))

    def net(x, els):
        h = conv2d(x, lifting_kernel(lift.kernel_net, g, els, 7, 2, 4), "same")
        h = jax.nn.relu(h.reshape(1, H, H, 8))
        w = group_kernel(conv.kernel_net, g, els, els, ones, ones, 7, 4, 3)
        return conv2d(h, w, "same").reshape(1, H, H, 2, 3)

    base = jnp.array([[[0.0, 0.0], [0.0, LOG2]]])
    up = base + jnp.array([[[0.0, LOG2]]])
    y0 = _at(net(_blobs(1.0), base), 1, 4)
    shifted = _rel(_at(net(_blobs(2.0), up), 2, 4), y0)
    unshifted = _rel(_at(net(_blobs(2.0), base), 2, 4), y0)
    assert shifted < SCALE_BOUND, shifted
    assert unshifted > 3 * SCALE_BOUND, unshifted
