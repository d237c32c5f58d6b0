"""Issue 7, section 1: the E2 mirror gradient, exact relative elements of grids, masked MLP
kernel statistics, one N' rule, the Gumbel schedule as traced state, replayable test keys."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pgcnn_jax as pg
import pgcnn_jax.nn._functional as functional
from pgcnn_jax.analysis import learned_subsets
from pgcnn_jax.groups import ANGLE_SNAP, TWO_PI, get_group, subset_size
from pgcnn_jax.kernels import relative_positions
from pgcnn_jax.models import ModelConfig, partial_layers
from pgcnn_jax.nn import DistributionParam, GumbelHorizon
from pgcnn_jax.testing import assert_equivariant
from pgcnn_jax.train import (
    TrainConfig,
    create_model,
    layer_summary,
    train_step,
)
from pgcnn_jax.train._state import get_pure_state, set_pure_state

E2 = get_group("e2")

# ----------------------------------------------------------------------------- 1. mirror gradient


# Relaxed values, and +-1: the straight-through sample is +-1 forward, where its gradient is
# taken.
@pytest.mark.parametrize("m", [0.3, -0.7, 1.0, -1.0])
@pytest.mark.parametrize("r", [0.0, 0.9, 4.0])
def test_inverse_matrix_is_the_matrix_of_the_inverse_at_relaxed_mirrors(r, m):
    g = jnp.array([r, m], jnp.float32)
    release = lambda g: E2.matrix(E2.inverse(g))  # noqa: E731  (REFERENCE 1.3)
    np.testing.assert_allclose(E2.inverse_matrix(g), release(g), atol=1e-6)
    np.testing.assert_allclose(
        jax.jacfwd(E2.inverse_matrix)(g), jax.jacfwd(release)(g), rtol=1e-5, atol=1e-6
    )
    # Negative control: the explicit inverse has other derivatives in m (for r != 0).
    explicit = lambda g: _explicit_inverse(g[0], g[1])  # noqa: E731
    d_m = jax.jacfwd(explicit)(g)[..., 1] - jax.jacfwd(release)(g)[..., 1]
    assert (float(jnp.max(jnp.abs(d_m))) > 0.1) == (r != 0.0)


def test_inverse_matrix_forward_is_unchanged_at_hard_mirrors():
    r = jnp.linspace(0.0, TWO_PI, 97)
    for m in (1.0, -1.0):
        g = jnp.stack([r, jnp.full_like(r, m)], axis=-1)
        c, s = jnp.cos(r), jnp.sin(r)
        explicit = jnp.stack([jnp.stack([c, -m * s], -1), jnp.stack([s, m * c], -1)], -2)
        np.testing.assert_array_equal(E2.inverse_matrix(g), explicit)
        eye = np.broadcast_to(np.eye(2), (97, 2, 2))
        np.testing.assert_allclose(E2.matrix(g) @ E2.inverse_matrix(g), eye, atol=1e-6)


def _positions_with(formula):
    """A ``_rotated_positions`` that evaluates the kernel at ``formula(r, m) p``."""

    def rotated(group, elements, kernel_size):
        r, m = elements[..., 0], elements[..., 1]
        a_inv = formula(r, m)
        return jnp.einsum("snab,yxb->snyxa", a_inv, relative_positions(kernel_size))

    return rotated


def _release_inverse(r, m):
    """The release's ``A(g^{-1}) = A(-m r, m)``, written out (REFERENCE 1.3)."""
    c, s = jnp.cos(m * r), jnp.sin(m * r)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([m * s, m * c], -1)], -2)


def _explicit_inverse(r, m):
    """``[[cos r, -m sin r], [sin r, m cos r]]``: the same matrix at ``m = +-1`` only."""
    c, s = jnp.cos(r), jnp.sin(r)
    return jnp.stack([jnp.stack([c, -m * s], -1), jnp.stack([s, m * c], -1)], -2)


def _mirror_gradient(conv, h, seed):
    """d/d(mirror parameter) of a fixed projection of the layer's output (a fresh ``jit``
    each call, so that the patched renderer is traced)."""
    weights = jax.random.normal(jax.random.key(7), (1, 7, 7, 4, 2))

    @jax.jit
    def grad(state):
        def loss(conv):
            return jnp.sum(conv(h, rngs=nnx.Rngs(sample=seed)).values * weights)

        conv = nnx.merge(graphdef, state)
        return nnx.grad(loss, argnums=nnx.DiffState(0, DistributionParam))(conv)

    graphdef, state = nnx.split(conv)
    return float(grad(state)["mirror"][...])


def test_partial_e2_mirror_gradient_is_the_releases(key, monkeypatch):
    conv = pg.nn.GroupConv(
        2, 2, group="e2", num_elements=4, kernel_size=3, kernel=pg.KernelSpec(hidden=8),
        partial=True, rngs=nnx.Rngs(1),
    )  # fmt: skip
    conv.mirror[...] = 0.5
    conv.theta[...] = 0.8
    h = pg.nn.GroupFeatures(
        jax.random.normal(key, (1, 7, 7, 4, 2)), E2.grid(4)[None], jnp.ones((1, 4))
    )
    # A sampling key for which the mirror fires (otherwise no gradient reaches it).
    seed = next(s for s in range(50) if conv.sample(nnx.Rngs(sample=s).sample())[1].sum() == 4)
    ours = _mirror_gradient(conv, h, seed)
    monkeypatch.setattr(functional, "_rotated_positions", _positions_with(_release_inverse))
    release = _mirror_gradient(conv, h, seed)
    assert abs(release) > 1e-3
    assert ours == pytest.approx(release, rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------------------- 2. exact grids


def _grid_indices(group, n):
    """``(rotation index, mirror)`` of the grid elements, as integers."""
    rot = group.num_rotations(n)
    a = np.arange(n) % rot
    m = np.where(np.arange(n) < rot, 1, -1) if isinstance(group, pg.groups.E2) else np.ones(n, int)
    return a, m, rot


@pytest.mark.parametrize(
    "group, n", [("e2", 20), ("e2", 24), ("e2", 40), ("e2", 64), ("se2", 40), ("se2", 64)]
)
def test_relative_elements_of_grids_are_exact(group, n):
    g = get_group(group)
    grid = g.grid(n)[None]
    rel = np.asarray(g.relative(grid, grid))[0]  # [N_out, N_in, d]
    a, m, rot = _grid_indices(g, n)
    # u_i^{-1} v_j has rotation index (a_j - m_j m_i a_i) mod R (REFERENCE 1.5).
    index = (a[None, :] - m[None, :] * m[:, None] * a[:, None]) % rot
    zero = index == 0
    assert np.all(rel[..., 0][zero] == 0.0), "a zero rotation is not exactly 0"
    assert np.all(rel[..., 0] < TWO_PI - ANGLE_SNAP), "an angle sits just below 2 pi"
    np.testing.assert_allclose(rel[..., 0], TWO_PI * index / rot, atol=2e-6)
    # The kernel net sees the identity rotation at exactly -1.
    assert np.all(np.asarray(g.normalize(rel))[..., 0][zero] == -1.0)


def test_wrap_angle_snaps_only_rounding_and_keeps_gradients():
    w = pg.groups.wrap_angle(jnp.array([TWO_PI - 1e-7, 1e-7, -1e-7, 0.5, TWO_PI + 0.5, -0.5]))
    np.testing.assert_allclose(w, [0.0, 0.0, 0.0, 0.5, 0.5, TWO_PI - 0.5], atol=1e-6)
    assert w[0] == 0.0 and w[1] == 0.0 and w[2] == 0.0
    grad = jax.grad(lambda x: jnp.sum(pg.groups.wrap_angle(x)))(jnp.array([TWO_PI, 3.0]))
    np.testing.assert_array_equal(grad, [1.0, 1.0])  # straight-through at the snap


@pytest.mark.parametrize("group, n", [("e2", 24), ("e2", 40), ("e2", 64), ("se2", 40)])
def test_deterministic_grids_are_exactly_equivariant(key, group, n):
    settings = dict(group=group, num_elements=n, kernel_size=5, kernel=pg.KernelSpec(hidden=8))
    lift = pg.nn.LiftingConv(1, 2, sampling="deterministic", rngs=nnx.Rngs(0), **settings)
    conv = pg.nn.GroupConv(2, 2, sampling="deterministic", rngs=nnx.Rngs(1), **settings)
    graphdef, state = nnx.split((lift, conv))

    @jax.jit
    def forward(state, x):
        lift, conv = nnx.merge(graphdef, state)
        h = lift(x)
        return conv(h.replace_values(jax.nn.relu(h.values)))

    x = jax.random.normal(key, (1, 9, 9, 1))
    # The generators: a quarter turn (and, for E2, a flip).
    elements = [(math.pi / 2, 1.0), (0.0, -1.0)] if group == "e2" else [(math.pi / 2,)]
    assert_equivariant(lambda x: forward(state, x), x, group, elements, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- 3. MLP statistics


@pytest.mark.parametrize("k", [3, 0])
def test_mlp_kernel_statistics_ignore_masked_slots(key, k):
    # A partial E2 layer's elements: R' = 2 of 4 rotations (theta = 1/2), the mirror never
    # fires, so 2 valid slots of 8.
    g, mask = pg.groups.sample_elements(E2, key, 8, partial=True, theta=0.5, mirror=-20.0)
    assert float(mask.sum()) == 2
    net = pg.kernels.make_kernel_net("mlp_relu", 4 if k else 2, 6, hidden=8, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(net)

    @jax.jit
    def render(state, g_out, g_in):
        """The kernel and the BatchNorms' running statistics after rendering it."""
        net = nnx.merge(graphdef, state)
        w = pg.nn.group_kernel(net, E2, g_out, g_in, mask, mask, k, 2, 3)
        return w, nnx.state(net, nnx.BatchStat)

    # Other values in the invalid slots: any angle, the other mirror sign.
    angles = jax.random.uniform(jax.random.fold_in(key, 1), (2, *g.shape[:-1])) * TWO_PI
    noise = jnp.stack([angles, jnp.broadcast_to(-g[..., 1], angles.shape)], -1)
    scrambled = jnp.where(mask[..., None] > 0, g, noise)
    assert not np.array_equal(scrambled[0], g) and not np.array_equal(scrambled[1], g)
    w_a, stats_a = render(state, g, g)
    w_b, stats_b = render(state, scrambled[0], scrambled[1])
    assert float(jnp.max(jnp.abs(w_a))) > 0
    np.testing.assert_allclose(w_b, w_a, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(stats_a), jax.tree.leaves(stats_b), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_mlp_kernel_forward_of_full_layers_is_unchanged(key):
    net = pg.kernels.make_kernel_net("mlp_swish", 4, 6, hidden=16, rngs=nnx.Rngs(0))
    x = jax.random.normal(key, (2, 4, 4, 3, 3, 4))
    np.testing.assert_allclose(net(x, mask=jnp.ones(x.shape[:-1])), net(x), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="mask of shape"):
        net(x, mask=jnp.ones((4, 4)))


# ----------------------------------------------------------------------------- 4. one N' rule


def test_subset_size_rule():
    se2 = get_group("se2")
    assert subset_size(se2, 8) == (8, 8)
    assert subset_size(se2, 8, theta=0.3) == (3, 3)  # ceil(2.4)
    assert subset_size(E2, 8, theta=-0.3, mirror=1.0) == (1, 2)  # signed ceil: floor(1.2)
    assert subset_size(E2, 8, theta=1.0, mirror=-1.0) == (4, 4)
    # Keep probabilities sigmoid(2 p): each rotation kept iff at least 1/2 (the mode).
    keep = 0.5 * np.log(np.array([0.6, 0.6, 0.6]) / 0.4)  # probabilities 0.6
    assert subset_size(E2, 8, keep=keep, mirror=0.0) == (4, 8)
    assert subset_size(se2, 4, keep=-keep) == (1, 1)
    with pytest.raises(ValueError, match="keep must have shape"):
        subset_size(se2, 8, keep=keep)


def test_training_logs_and_subset_analysis_count_alike():
    config = ModelConfig(
        group="e2", num_elements=8, sampling="deterministic", width=2, kernel_hidden=4,
        kernel_size=3, num_blocks=1, block_width_factors=(1.0, 1), pool_blocks=(1,),
        norm="layer",
    )  # fmt: skip
    model = pg.models.build_model(config, num_classes=2, in_features=1, rngs=nnx.Rngs(0))
    layers = dict(partial_layers(model))
    assert layers
    for layer in layers.values():
        # Keep probability 0.6 for every rotation: the mode keeps all 3, the rounded
        # expectation 1 + round(1.8) = 3 would count one rotation fewer.
        layer.keep[...] = jnp.full(layer.keep.shape, 0.5 * math.log(0.6 / 0.4))
    summary = layer_summary(model)
    subsets = {s.name: s for s in learned_subsets(model, jnp.zeros((1, 12, 12, 1)))}
    for name, elements in zip(summary["layers"], summary["elements"], strict=True):
        assert elements == 8
        assert subsets[name].axes["rotation"]["kept"] == 4
        assert elements == 2 * subsets[name].axes["rotation"]["kept"]  # mirror prob. 0.88


# ----------------------------------------------------------------------------- 5. Gumbel schedule


class _TinyPartialNet(nnx.Module):
    """Lift, one partial E2 group conv, mean pooling: the smallest model with a Gumbel step."""

    def __init__(self, rngs):
        settings = dict(
            group="e2", num_elements=4, kernel_size=3, kernel=pg.KernelSpec(hidden=4), rngs=rngs
        )
        self.lift = pg.nn.LiftingConv(1, 2, sampling="deterministic", **settings)
        self.conv = pg.nn.GroupConv(2, 2, partial=True, **settings)

    def __call__(self, x, *, rngs):
        h = self.conv(self.lift(x), rngs=rngs)
        return jnp.mean(h.values, axis=(1, 2, 3))


def test_gumbel_counter_advances_once_per_optimiser_step(key):
    model = _TinyPartialNet(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)
    batch = {"image": jax.random.normal(key, (2, 7, 7, 1)), "label": jnp.array([0, 1])}
    model(batch["image"], rngs=nnx.Rngs(sample=0))  # a train-mode forward: no count
    assert int(model.conv.gumbel_step[...]) == 0
    for step in range(3):
        train_step(model, optimizer, batch, jax.random.fold_in(key, step))
    assert int(model.conv.gumbel_step[...]) == 3
    # The temperature follows the step and the traced horizon.
    pg.nn.set_gumbel_horizon(model, 6)
    assert float(model.conv.temperature()) == pytest.approx(0.5 - 0.5 * (0.5 - 1e-4), rel=1e-6)
    with pytest.raises(ValueError, match="gumbel horizon"):
        pg.nn.set_gumbel_horizon(model, 0)


def test_checkpoints_leave_the_horizon_to_the_config():
    model = _TinyPartialNet(nnx.Rngs(0))
    pg.nn.set_gumbel_horizon(model, 9)
    pure = get_pure_state(model)
    assert "gumbel_horizon" not in pure["conv"] and "gumbel_step" in pure["conv"]
    other = _TinyPartialNet(nnx.Rngs(1))
    set_pure_state(other, pure)  # restores everything it holds
    np.testing.assert_array_equal(other.conv.theta[...], model.conv.theta[...])
    assert int(other.conv.gumbel_horizon[...]) == 100_000  # its own


def test_models_get_the_horizon_of_their_train_config():
    model_config = ModelConfig(group="e2", num_elements=4, width=2, kernel_hidden=4)
    config = TrainConfig(dataset="mnist6_180", model=model_config, epochs=3, batch_size=2)
    assert config.gumbel_horizon == 3 * 5918  # epochs * ceil(11836 / 2) (REFERENCE 1.7)
    assert config.model.gumbel_horizon == config.gumbel_horizon  # recorded in config.json
    horizons = jax.tree.leaves(nnx.state(create_model(config), GumbelHorizon))
    assert horizons and all(int(h) == config.gumbel_horizon for h in horizons)
    # Traced state, not structure: configs differing only in it build the same graph.
    assert config.model == config.model.replace(gumbel_horizon=7)
    assert hash(config.model) == hash(config.model.replace(gumbel_horizon=7))


# ----------------------------------------------------------------------------- 6. test keys


def test_test_keys_do_not_depend_on_the_hash_seed(key, request):
    script = (
        "import importlib.util, sys, types, jax\n"
        "spec = importlib.util.spec_from_file_location('c', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "node = types.SimpleNamespace(nodeid=sys.argv[2])\n"
        "key = mod.key.__wrapped__(types.SimpleNamespace(node=node))\n"
        "print(jax.random.key_data(key).tolist())\n"
    )
    conftest = os.path.join(os.path.dirname(__file__), "conftest.py")
    outputs = []
    for salt in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=salt, JAX_PLATFORMS="cpu")
        run = subprocess.run(
            [sys.executable, "-c", script, conftest, request.node.nodeid],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        outputs.append(run.stdout.strip())
    assert outputs[0] == outputs[1] == str(jax.random.key_data(key).tolist())
