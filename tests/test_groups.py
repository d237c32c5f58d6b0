"""Group axioms, matrix form and relative-element encoding (REFERENCE 1.2-1.5)."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from pgcnn_jax import groups

ELEMENTS = {
    "se2": [[0.0], [0.3], [math.pi / 2], [2.0], [5.9]],
    "t2": [[0.0]],
    "e2": [[0.0, 1.0], [0.3, 1.0], [2.0, -1.0], [math.pi, -1.0], [5.9, 1.0]],
    "mirror": [[0.0, 1.0], [0.0, -1.0]],
    "sim2": [[0.0, 0.0], [0.3, 0.35], [math.pi / 2, -0.7], [2.0, 1.2], [5.9, 0.0]],
}


def _close(group, a, b):
    assert np.all(np.asarray(group.distance(jnp.asarray(a), jnp.asarray(b))) < 1e-5), (a, b)


@pytest.mark.parametrize("name", groups.GROUP_NAMES)
def test_axioms(name):
    g = groups.get_group(name)
    els = [jnp.asarray(e) for e in ELEMENTS[name]]
    e = g.identity()
    for a in els:
        _close(g, g.product(e, a), a)
        _close(g, g.product(a, e), a)
        _close(g, g.product(a, g.inverse(a)), e)
        _close(g, g.product(g.inverse(a), a), e)
    for a, b, c in itertools.product(els, repeat=3):
        _close(g, g.product(g.product(a, b), c), g.product(a, g.product(b, c)))


@pytest.mark.parametrize("name", groups.GROUP_NAMES)
def test_matrix_is_homomorphism(name):
    g = groups.get_group(name)
    els = [jnp.asarray(e) for e in ELEMENTS[name]]
    for a, b in itertools.product(els, repeat=2):
        np.testing.assert_allclose(g.matrix(a) @ g.matrix(b), g.matrix(g.product(a, b)), atol=1e-5)
    for a in els:
        np.testing.assert_allclose(g.matrix(a) @ g.inverse_matrix(a), np.eye(2), atol=1e-6)


def test_matrix_convention():
    # A(r, m) = diag(1, m) [[cos r, sin r], [-sin r, cos r]] on (row, col) (REFERENCE 1.3).
    e2 = groups.get_group("e2")
    np.testing.assert_allclose(e2.matrix(jnp.array([0.0, -1.0])), [[1, 0], [0, -1]])
    np.testing.assert_allclose(
        e2.matrix(jnp.array([math.pi / 2, 1.0])), [[0, 1], [-1, 0]], atol=1e-7
    )


def test_e2_product_formula():
    # (r1, m1)(r2, m2) = (r2 + m2 r1, m1 m2), the implemented convention (REFERENCE 1.4).
    e2 = groups.get_group("e2")
    out = e2.product(jnp.array([0.5, 1.0]), jnp.array([0.2, -1.0]))
    np.testing.assert_allclose(out, [0.2 - 0.5 + 2 * math.pi, -1.0], atol=1e-6)


@pytest.mark.parametrize("name", ["se2", "e2"])
def test_relative_identity_is_minus_one(name):
    g = groups.get_group(name)
    grid = g.grid(8)[None]
    rel = g.normalize(g.relative(grid, grid))
    diag = jnp.diagonal(rel[0, ..., 0])
    np.testing.assert_array_equal(diag, -np.ones(8))
    assert rel.shape == (1, 8, 8, g.dim)
    assert float(rel[..., 0].max()) < 1.0 and float(rel[..., 0].min()) >= -1.0


def test_relative_values():
    se2 = groups.get_group("se2")
    u, v = jnp.array([[[1.0]]]), jnp.array([[[0.25]]])
    np.testing.assert_allclose(se2.relative(u, v)[0, 0, 0, 0], 0.25 - 1.0 + 2 * math.pi, 1e-6)
    e2 = groups.get_group("e2")
    u, v = jnp.array([[[1.0, -1.0]]]), jnp.array([[[0.25, 1.0]]])
    # angle (r_in - m_in m_out r_out) mod 2 pi, mirror m_out m_in.
    np.testing.assert_allclose(e2.relative(u, v)[0, 0, 0], [1.25, -1.0], atol=1e-6)


def test_grids():
    np.testing.assert_allclose(
        groups.get_group("se2").grid(8)[:, 0], 2 * np.pi * np.arange(8) / 8, atol=1e-6
    )
    e2 = np.asarray(groups.get_group("e2").grid(8))
    np.testing.assert_allclose(e2[:4, 0], e2[4:, 0])
    np.testing.assert_array_equal(e2[:, 1], [1, 1, 1, 1, -1, -1, -1, -1])
    np.testing.assert_array_equal(groups.get_group("mirror").grid(2), [[0, 1], [0, -1]])
    np.testing.assert_array_equal(groups.get_group("t2").grid(1), [[0]])


def test_groups_are_hashable_values():
    assert groups.get_group("se2") == groups.get_group("SE2")
    assert len({groups.get_group(n) for n in groups.GROUP_NAMES}) == len(groups.GROUP_NAMES)


@pytest.mark.parametrize(
    "name, n, match",
    [("so3", 4, "so3"), ("se2", 0, "0"), ("t2", 4, "4"), ("mirror", 4, "4"), ("e2", 7, "7")],
)
def test_bad_arguments(name, n, match):
    with pytest.raises(ValueError, match=match):
        groups.get_group(name).grid(n)
