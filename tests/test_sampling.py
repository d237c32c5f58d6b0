"""Monte Carlo sampling: counts, intervals, gradients, Gumbel straight-through (REFERENCE 1.6)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgcnn_jax import groups

SE2 = groups.get_group("se2")
E2 = groups.get_group("e2")


@pytest.mark.parametrize("theta, count", [(1.0, 8), (0.5, 4), (0.3, 3), (0.1, 1), (0.0, 1)])
def test_partial_counts_and_interval(key, theta, count):
    els, mask = groups.sample_elements(SE2, key, 8, partial=True, theta=theta, num_samples=5)
    assert els.shape == (5, 8, 1) and mask.shape == (5, 8)
    np.testing.assert_array_equal(mask.sum(-1), count)
    np.testing.assert_array_equal(mask[:, :count], 1)  # valid slots come first
    angles = np.angle(np.exp(1j * np.asarray(els[..., 0])))  # to (-pi, pi]
    valid = np.asarray(mask) > 0
    assert np.all(angles[valid] >= -math.pi * theta - 1e-5)
    assert np.all(angles[valid] < math.pi * theta + 1e-5)
    if theta == 0.0:
        np.testing.assert_array_equal(els[:, 0, 0], 0.0)


def test_partial_spacing_and_offset(key):
    els, _ = groups.sample_elements(SE2, key, 8, partial=True, theta=0.5)
    a = np.unwrap(np.asarray(els[0, :4, 0]))
    np.testing.assert_allclose(np.diff(a), math.pi / 4, atol=1e-5)


def test_theta_gradient_matches_reference(key):
    # d r_k / d theta = -pi + 2 pi u / N' for every k (theta detached in the k term).
    for theta in (1.0, 0.5, 0.3):
        n_valid = math.ceil(8 * theta - 1e-9)

        def angles(t):
            return groups.sample_elements(SE2, key, 8, partial=True, theta=t)[0][0, :, 0]

        jac = jax.jacobian(angles)(jnp.float32(theta))
        # Recover u from the first angle: r_0 = -pi theta + 2 pi theta u / N' (mod 2 pi).
        r0 = float(jnp.mod(angles(theta)[0] + math.pi * theta, 2 * math.pi))
        u = r0 * n_valid / (2 * math.pi * theta)
        expected = -math.pi + 2 * math.pi * u / n_valid
        np.testing.assert_allclose(jac[:n_valid], expected, rtol=1e-4)


def test_full_random_is_rotated_grid(key):
    els, mask = groups.sample_elements(SE2, key, 8, sampling="random", num_samples=3)
    d = np.mod(np.diff(np.asarray(els[..., 0]), axis=1), 2 * math.pi)
    np.testing.assert_allclose(d, math.pi / 4, atol=1e-5)
    assert not np.allclose(els[0], els[1])  # one offset per row
    np.testing.assert_array_equal(mask, 1)


def test_gumbel_straight_through(key):
    def f(logit):
        s, _ = groups.relaxed_bernoulli_st(key, jnp.full((64,), logit), 0.5)
        return s

    s = f(0.3)
    assert set(np.unique(np.asarray(s)).tolist()) <= {0.0, 1.0}
    g = jax.grad(lambda p: jnp.sum(f(p)))(0.3)
    assert float(g) != 0.0 and np.isfinite(float(g))
    # P(hard = 1) = sigmoid(logit).
    many, _ = groups.relaxed_bernoulli_st(key, jnp.full((20000,), 1.0), 0.1)
    assert abs(float(many.mean()) - float(jax.nn.sigmoid(1.0))) < 0.02


def test_temperature_schedule():
    np.testing.assert_allclose(groups.gumbel_temperature(0, 100), 0.5)
    np.testing.assert_allclose(groups.gumbel_temperature(50, 100), 0.5 - 0.5 * (0.5 - 1e-4))
    np.testing.assert_allclose(groups.gumbel_temperature(500, 100), 1e-4)  # clamped


def test_e2_partial_mirror_and_offset(key):
    keys = jax.random.split(key, 400)
    fired, offsets = [], []
    for k in keys:
        els, mask = groups.sample_elements(E2, k, 8, partial=True, theta=1.0, mirror=1.0)
        fired.append(float(mask.sum()) == 8)
        offsets.append(float(jnp.mod(els[0, 0, 0] + math.pi, 2 * math.pi)))
        if fired[-1]:
            np.testing.assert_array_equal(els[0, :, 1], [1, 1, 1, 1, -1, -1, -1, -1])
        else:
            np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 0, 0, 0, 0])
    # P(mirror) = sigmoid(2 p) = 0.881.
    assert abs(np.mean(fired) - 0.881) < 0.06
    # Offset fix (REFERENCE 1.6 g): the offset spans one whole cell of the R' grid (pi / 2).
    assert max(offsets) > 0.9 * math.pi / 2


def test_mirror_gradient_flows_through_mirrored_elements(key):
    def f(p):
        els, _ = groups.sample_elements(E2, key, 8, partial=True, theta=1.0, mirror=p)
        return jnp.sum(els[..., 1])

    # Find a key where the mirror fires; the gradient is then non-zero.
    for k in jax.random.split(key, 20):
        els, mask = groups.sample_elements(E2, k, 8, partial=True, theta=1.0, mirror=1.0)
        if float(mask.sum()) == 8:
            g = jax.grad(
                lambda p, k=k: jnp.sum(
                    groups.sample_elements(E2, k, 8, partial=True, theta=1.0, mirror=p)[0][..., 1]
                )
            )(1.0)
            assert float(g) != 0.0
            return
    pytest.fail("mirror never fired")


def test_deterministic_partial_keep(key):
    els, mask = groups.sample_elements(
        SE2, key, 8, sampling="deterministic", partial=True, keep=jnp.full((7,), -50.0)
    )
    np.testing.assert_array_equal(mask, [[1, 0, 0, 0, 0, 0, 0, 0]])  # only the identity
    els, mask = groups.sample_elements(
        SE2, key, 8, sampling="deterministic", partial=True, keep=jnp.full((7,), 50.0)
    )
    np.testing.assert_array_equal(mask, 1)
    np.testing.assert_allclose(els[0, :, 0], 2 * np.pi * np.arange(8) / 8, atol=1e-6)
    # Correct parameterisation: keep probability sigmoid(2 p), not sigmoid(sigmoid(2 p)).
    keeps = [
        float(
            groups.sample_elements(
                SE2, k, 8, sampling="deterministic", partial=True, keep=jnp.full((7,), -1.0)
            )[1].sum()
            - 1
        )
        / 7
        for k in jax.random.split(key, 200)
    ]
    assert abs(np.mean(keeps) - float(jax.nn.sigmoid(-2.0))) < 0.04


def test_bad_sampling_arguments(key):
    with pytest.raises(ValueError, match="bogus"):
        groups.sample_elements(SE2, key, 8, sampling="bogus")
    with pytest.raises(ValueError, match="theta"):
        groups.sample_elements(SE2, key, 8, partial=True)
    with pytest.raises(ValueError, match="key"):
        groups.sample_elements(SE2, None, 8, sampling="random")
