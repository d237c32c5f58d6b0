"""Exact equivariance on the pixel grid, with negative controls (REFERENCE 10.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.testing import assert_equivariant, equivariance_error

TOL = dict(atol=1e-5, rtol=1e-5)


def _lift(group, n, rngs, c_in=2, c_out=3, **kw):
    return pg.nn.LiftingConv(
        c_in,
        c_out,
        group=group,
        num_elements=n,
        kernel_size=7,
        sampling="deterministic",
        kernel=pg.KernelSpec(hidden=16),
        rngs=rngs,
        **kw,
    )


def _conv(group, n, rngs, c_in=3, c_out=4, **kw):
    kw.setdefault("sampling", "deterministic")
    return pg.nn.GroupConv(
        c_in,
        c_out,
        group=group,
        num_elements=n,
        kernel_size=7,
        kernel=pg.KernelSpec(hidden=16),
        rngs=rngs,
        **kw,
    )


def _relu(h):
    return h.replace_values(jax.nn.relu(h.values))


@pytest.mark.parametrize("group, n", [("se2", 4), ("se2", 8), ("e2", 8)])
def test_lifting_equivariant(key, group, n):
    lift = _lift(group, n, nnx.Rngs(0))
    x = jax.random.normal(key, (2, 13, 13, 2))
    reports = assert_equivariant(lift, x, group, **TOL)
    assert len(reports) == (3 if group == "se2" else 7)  # 90/180/270 (and 4 flips for E2)


@pytest.mark.parametrize("group, n", [("se2", 4), ("se2", 8), ("e2", 8)])
def test_lifting_relu_groupconv_equivariant(key, group, n):
    lift, conv = _lift(group, n, nnx.Rngs(0)), _conv(group, n, nnx.Rngs(1))
    x = jax.random.normal(key, (2, 13, 13, 2))
    assert_equivariant(lambda x: conv(_relu(lift(x))), x, group, **TOL)


def test_e2_column_flip_swaps_mirror_halves(key):
    lift = _lift("e2", 8, nnx.Rngs(0))
    x = jax.random.normal(key, (1, 11, 11, 2))
    a, b = lift(x).values, lift(x[:, :, ::-1]).values
    np.testing.assert_allclose(b[:, :, ::-1][:, :, :, [4, 5, 6, 7, 0, 1, 2, 3]], a, **TOL)


@pytest.mark.parametrize("group, n", [("se2", 4), ("se2", 8), ("e2", 8)])
def test_negative_control_wrong_roll_direction(key, group, n):
    lift, conv = _lift(group, n, nnx.Rngs(0)), _conv(group, n, nnx.Rngs(1))
    x = jax.random.normal(key, (2, 13, 13, 2))
    fn = lambda x: conv(_relu(lift(x)))  # noqa: E731
    right = equivariance_error(fn, x, group, (np.pi / 2,))
    wrong = equivariance_error(fn, x, group, (np.pi / 2,), wrong_direction=True)
    assert right.relative_error < 1e-5
    assert wrong.relative_error > 1e-2
    # A position-dependent layer is not equivariant: assert_equivariant must say so.
    ramp = jnp.arange(13.0).reshape(1, 13, 1, 1, 1)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(
            lambda x: fn(x).replace_values(fn(x).values * ramp), x, group, [(np.pi / 2,)], **TOL
        )


def _partial_stack(theta, seed):
    lift = pg.nn.LiftingConv(
        2,
        3,
        group="se2",
        num_elements=8,
        kernel_size=7,
        sampling="random",
        kernel=pg.KernelSpec(hidden=16),
        rngs=nnx.Rngs(0),
    )
    conv = _conv("se2", 8, nnx.Rngs(1), sampling="random", partial=True)
    conv.theta[...] = theta

    def fn(x):
        rngs = nnx.Rngs(sample=seed)  # same key in both passes
        return pg.nn.group_max_pool(conv(_relu(lift(x, rngs=rngs)), rngs=rngs))

    return fn


def test_negative_control_partial_layer(key):
    x = jax.random.normal(key, (2, 13, 13, 2))
    # theta = 1: the sampled set is a rotated regular grid of 8, closed under 180 degrees.
    full = equivariance_error(_partial_stack(1.0, 3), x, "se2", (np.pi,))
    assert full.relative_error < 1e-5
    # theta = 0.5: the subset [-pi/2, pi/2) excludes the 180-degree rotation.
    part = equivariance_error(_partial_stack(0.5, 3), x, "se2", (np.pi,))
    assert part.relative_error > 1e-2
    # ... while the identity still reproduces the output exactly.
    same = equivariance_error(_partial_stack(0.5, 3), x, "se2", (0.0,))
    assert same.max_error == 0.0


def test_transform_rejects_off_grid_elements():
    with pytest.raises(ValueError, match="pixel grid"):
        pg.testing.transform_image(jnp.zeros((1, 5, 5, 1)), "se2", (0.3,))
