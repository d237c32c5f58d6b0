"""The group protocol, tested generically over every registered group (``GROUP_NAMES``):
axioms, matrix homomorphism, action on images, group-axis permutations, sampling contracts
and exact equivariance of a lifting + group conv network, with a negative control."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import lift_relu_conv

import pgcnn_jax as pg
from pgcnn_jax import groups
from pgcnn_jax.testing import assert_equivariant, equivariance_error

NAMES = groups.GROUP_NAMES


def _n(group) -> int:
    """A slot count valid for every group whose grid is closed under quarter turns."""
    return group.fixed_num_elements or 8


def _elements(group, key) -> jax.Array:
    """Grid, randomly offset and exact-grid elements of ``group``, ``[M, d]``."""
    n = _n(group)
    sampled, _ = group.sample(key, n, num_samples=2, sampling="random")
    exact = [group.as_element(e) for e in group.exact_elements()]
    parts = [group.grid(n), sampled.reshape(-1, group.dim), group.identity((1,))]
    if exact:
        parts.append(jnp.stack(exact))
    return jnp.concatenate(parts)


def _close(group, a, b, tol=1e-4):
    d = np.asarray(group.distance(jnp.asarray(a), jnp.asarray(b)))
    assert np.all(d < tol), (np.asarray(a), np.asarray(b), d)


@pytest.mark.parametrize("name", NAMES)
def test_axioms(name, key):
    g = groups.get_group(name)
    els = _elements(g, key)
    sub = els[:: max(1, els.shape[0] // 10)]  # associativity on about ten elements
    a, b, c = sub[:, None, None], sub[None, :, None], sub[None, None, :]
    e = g.identity()
    _close(g, g.product(e, els), els)
    _close(g, g.product(els, e), els)
    _close(g, g.product(els, g.inverse(els)), jnp.broadcast_to(e, els.shape))
    _close(g, g.product(g.inverse(els), els), jnp.broadcast_to(e, els.shape))
    _close(g, g.product(g.product(a, b), c), g.product(a, g.product(b, c)))
    # relative(u, v) = u^-1 v, and the identity encodes to the same value everywhere
    rel = g.relative(els[None], els[None])[0]
    _close(g, jnp.diagonal(rel, axis1=0, axis2=1).T, jnp.broadcast_to(e, els.shape))
    enc = np.asarray(g.normalize(rel))
    assert enc.shape == (*rel.shape[:-1], g.dim)
    assert np.all(enc >= -1 - 1e-6) and np.all(enc <= 1 + 1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_matrix_is_homomorphism(name, key):
    g = groups.get_group(name)
    els = _elements(g, key)
    a, b = els[:, None], els[None, :]
    np.testing.assert_allclose(
        g.matrix(a) @ g.matrix(b), g.matrix(g.product(a, b)), atol=1e-5, rtol=1e-5
    )
    eye = np.broadcast_to(np.eye(2), (els.shape[0], 2, 2))
    np.testing.assert_allclose(g.matrix(els) @ g.inverse_matrix(els), eye, atol=1e-5)
    np.testing.assert_allclose(g.matrix(g.identity()), np.eye(2), atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_action_of_product_is_composition(name, key):
    g = groups.get_group(name)
    exact = g.exact_elements()
    x = jax.random.normal(key, (1, 9, 9, 2))
    for a in exact:  # on the pixel grid: exact, so equal bit for bit
        for b in exact:
            ab = g.product(g.as_element(a), g.as_element(b))
            np.testing.assert_array_equal(g.act(g.act(x, b), a), g.act(x, ab, exact=True))
    # bilinear for any element: exact on a linear image, inside the image
    h = 41
    rows, cols = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
    img = jnp.asarray((0.3 * rows + 0.7 * cols + 1.0)[None, :, :, None], jnp.float32)
    els = _elements(g, key)[:6]
    inner = (np.hypot(rows - 20, cols - 20) <= 6)[None, :, :, None]
    for a in els:
        for b in els:
            two = g.act(g.act(img, b, exact=False), a, exact=False)
            one = g.act(img, g.product(a, b), exact=False)
            np.testing.assert_allclose(np.where(inner, two, 0), np.where(inner, one, 0), atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_permutation_of_the_group_axis(name):
    g = groups.get_group(name)
    grid = g.grid(_n(g))[None]
    for e in g.exact_elements():
        perm = np.asarray(g.permutation(grid, e))
        assert sorted(perm[0]) == list(range(grid.shape[1]))
        moved = g.product(g.inverse(g.as_element(e)), grid)  # g^-1 u_i = u_perm[i]
        _close(g, moved, grid[:, perm[0]])


@pytest.mark.parametrize("name", NAMES)
def test_sampling_contract(name, key):
    g = groups.get_group(name)
    n = _n(g)
    for sampling in groups.SAMPLING_METHODS:
        full, mask = g.sample(key, n, num_samples=3, sampling=sampling)
        assert full.shape == (3, n, g.dim) and mask.shape == (3, n)
        np.testing.assert_array_equal(mask, 1.0)
        specs = g.distribution(n, sampling)
        assert len({s.name for s in specs}) == len(specs)
        if not specs:
            continue
        params = {s.name: s.initial_value() for s in specs}
        elements, mask = g.sample(
            key, n, num_samples=2, sampling=sampling, partial=True, params=params
        )
        assert elements.shape == (2, n, g.dim) and mask.shape == (2, n)
        summary = g.summarize(n, {k: np.asarray(v) for k, v in params.items()})
        assert 1 <= summary.num_elements <= n
        # invalid slots hold the identity
        ident = jnp.broadcast_to(g.identity(), elements.shape)
        _close(g, jnp.where(mask[..., None] > 0, ident, elements), ident)


@pytest.mark.parametrize("name", NAMES)
def test_bad_num_elements_and_unknown_settings(name):
    g = groups.get_group(name)
    with pytest.raises(ValueError, match="num_elements"):
        g.check_num_elements(0)
    with pytest.raises(ValueError, match=name):
        groups.get_group(name, no_such_setting=1)


@pytest.mark.parametrize("name", NAMES)
def test_exact_equivariance(name, key):
    g = groups.get_group(name)
    exact = g.exact_elements()
    if not exact:
        pytest.skip(f"{name} has no non-identity element acting exactly on the pixel grid")
    net = lift_relu_conv(g, _n(g))
    x = jax.random.normal(key, (1, 11, 11, 2))
    reports = assert_equivariant(net, x, g, atol=1e-5, rtol=1e-5)
    assert len(reports) == len(exact)
    # negative control: a fixed random spatial weighting of the input breaks equivariance
    weight = jax.random.uniform(jax.random.fold_in(key, 1), (1, 11, 11, 1))
    for e in exact:
        r = equivariance_error(lambda x: net(x * weight), x, g, e)
        assert r.relative_error > 1e-2, r


_BRANCHING = [
    r"\b(has_mirror|has_rotations|rotates)\b",
    r"\bgroup\w*(\.name)?\s*(==|!=)",
    r"(==|!=)\s*\w*group\w*\b(\.name)?",
    r"\bgroup\w*(\.name)?\s+(not\s+)?in\b",
    r"isinstance\([^)]*\b(SE2|E2|T2|Mirror|Sim2)\b",
]
# In experiments/ configs compare their group fields with each other (a run's name); what must
# not appear there is a comparison with a group's name.
_BRANCHING_EXPERIMENTS = [
    r"\b(has_mirror|has_rotations|rotates)\b",
    r"\bgroup\w*(\.name)?\s*(==|!=)\s*[\"']",
    r"[\"'][\w-]*[\"']\s*(==|!=)\s*\w*group\w*\b",
    r"\bgroup\w*(\.name)?\s+(not\s+)?in\s+\(",
    r"isinstance\([^)]*\b(SE2|E2|T2|Mirror|Sim2)\b",
]
# Branching on a distribution parameter's name (which parameters a layer has is the group's
# business: ``Group.distribution`` / ``summarize`` / ``adaptive_count``).
_PARAM = r"[\"'](theta|keep|mirror|scale|mirror_prob)[\"']"
_PARAM_BRANCHING = [
    _PARAM + r"\s+(not\s+)?in\b",
    r"(==|!=)\s*" + _PARAM,
    _PARAM + r"\s*(==|!=)",
    r"\b(hasattr|getattr)\([^)]*" + _PARAM,
    r"\.get\(\s*" + _PARAM + r"\s*\)\s+is\s+(not\s+)?None",
    r"\.(theta|keep|mirror)\s+is\s+(not\s+)?None",
]


def _hits(root: pathlib.Path, patterns: list[str]) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*.py")):
        if path.parent.name == "groups":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(p, line) for p in patterns):
                hits.append(f"{root.name}/{path.relative_to(root)}:{i}: {line.strip()}")
    return hits


def test_no_group_branching_outside_groups():
    library = pathlib.Path(pg.__file__).parent
    experiments = library.parent / "experiments"
    hits = _hits(library, _BRANCHING + _PARAM_BRANCHING)
    hits += _hits(experiments, _BRANCHING_EXPERIMENTS + _PARAM_BRANCHING)
    assert not hits, "group branching outside pgcnn_jax/groups:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "line",
    [
        'if group == "t2":',
        'if "theta" in params:',
        'theta = getattr(layer, "theta", None)',
        'if params.get("mirror") is None:',
        "assert conv.theta is None",
    ],
)
def test_the_branching_patterns_catch(line):
    patterns = _BRANCHING_EXPERIMENTS + _PARAM_BRANCHING
    assert any(re.search(p, line) for p in patterns), line
