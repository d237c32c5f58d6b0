"""The rotation-scaling group ``sim2`` (issue 10): settings, kernel rendering on the enlarged
grid, exact rot90 and approximate scale equivariance, the learnable partial scale width,
adaptive execution and a CKResNet end to end. (The generic protocol tests run on it too.)"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pgcnn_jax as pg
from experiments import figures
from pgcnn_jax.analysis import learned_subsets
from pgcnn_jax.groups import Sim2, get_group
from pgcnn_jax.kernels import KernelSpec
from pgcnn_jax.models import ModelConfig, build_model, kernel_norm_penalty
from pgcnn_jax.nn import conv2d, group_kernel, lifting_kernel, rendered_kernel_size
from pgcnn_jax.testing import assert_equivariant, equivariance_error
from pgcnn_jax.train import (
    TrainConfig,
    config_differences,
    create_model,
    create_optimizer,
    layer_summary,
    train_step,
)

LOG2 = math.log(2.0)


# ----------------------------------------------------------------------------- the group
def test_settings_grid_and_bad_values():
    g = get_group("sim2", num_scales=3, scale_base=2.0)
    assert g == Sim2(3, 2.0) and hash(g) == hash(Sim2(3, 2)) and g.dim == 2
    assert get_group("sim2") == Sim2(2, math.sqrt(2.0))
    grid = np.asarray(g.grid(6))  # R = 2 rotations x 3 scales, slot j R + k
    want = [[0, 0], [math.pi, 0], [0, LOG2], [math.pi, LOG2], [0, 2 * LOG2], [math.pi, 2 * LOG2]]
    np.testing.assert_allclose(grid, want, atol=1e-6)
    np.testing.assert_allclose(g.matrix(jnp.array([0.0, LOG2])), 2 * np.eye(2), atol=1e-6)
    measure = g.kernel_measure(jnp.asarray(grid)[None])  # |det A|^-1 = s^-2
    np.testing.assert_allclose(measure, [[1, 1, 1 / 4, 1 / 4, 1 / 16, 1 / 16]], rtol=1e-6)
    assert g.kernel_extent(6) == 4.0
    with pytest.raises(ValueError, match="divisible by 3"):
        g.check_num_elements(4)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"num_scales must be a positive int, got {bad}"):
            get_group("sim2", num_scales=bad)
    for bad in (1.0, 0.5, float("nan"), "2"):
        with pytest.raises(ValueError, match="scale_base must be a finite number > 1"):
            get_group("sim2", scale_base=bad)
    with pytest.raises(ValueError, match="bad settings"):
        get_group("sim2", scales=2)


def test_rendered_kernel_size():
    assert rendered_kernel_size(get_group("se2"), 8, 7) == 7
    assert rendered_kernel_size(get_group("sim2", scale_base=2.0), 4, 5) == 9  # 4 * 2 + 1
    assert rendered_kernel_size(get_group("sim2"), 4, 5) == 7  # 4 sqrt(2) + 1 = 6.7
    assert rendered_kernel_size(get_group("sim2"), 4, 7) == 11  # 6 sqrt(2) + 1 = 9.5 -> 10 -> 11
    assert rendered_kernel_size(get_group("sim2", num_scales=1), 4, 7) == 7


def test_lifting_kernel_on_the_enlarged_grid():
    """Scale 1: the k x k disc kernel of SE2 in the middle of the enlarged grid (zeros around);
    scale 2: the same net on the twice larger disc ``|p| <= 2`` at ``p / 2``, times 1/4."""
    g = get_group("sim2", scale_base=2.0)
    lift = pg.nn.LiftingConv(2, 3, group=g, num_elements=2, kernel_size=5, rngs=nnx.Rngs(0))
    els = jnp.array([[[0.3, 0.0], [0.3, LOG2]]])
    w = np.asarray(lifting_kernel(lift.kernel_net, g, els, 5, 2, 3)).reshape(9, 9, 2, 2, 3)
    se2 = lifting_kernel(lift.kernel_net, get_group("se2"), jnp.array([[[0.3]]]), 5, 2, 3)
    np.testing.assert_allclose(w[2:7, 2:7, :, 0], np.asarray(se2)[0], atol=1e-6)
    assert not np.any(np.delete(np.delete(w[..., 0, :], [2, 3, 4, 5, 6], 0), [2, 3, 4, 5, 6], 1))
    pos = (np.arange(9) - 4) / 2.0
    inside = np.hypot(*np.meshgrid(pos, pos, indexing="ij")) <= 2.0
    assert inside.sum() == 49 and inside[0, 4] and not inside[1, 1]  # 81 taps, 49 on the disc
    r = np.asarray(g.inverse_matrix(els[0, 1]))
    q = np.einsum("ab,yxb->yxa", r, np.stack(np.meshgrid(pos, pos, indexing="ij"), -1))
    direct = np.asarray(lift.kernel_net(jnp.asarray(q, jnp.float32))).reshape(9, 9, 3, 2) / 4
    np.testing.assert_allclose(
        w[..., 1, :], np.where(inside[..., None, None], direct.transpose(0, 1, 3, 2), 0), atol=1e-6
    )


# ----------------------------------------------------------------------------- rot90
def test_rot90_equivariance_permutes_within_each_scale(key):
    g = get_group("sim2", num_scales=3)
    n = 12  # 4 rotations x 3 scales
    lift = pg.nn.LiftingConv(
        2,
        3,
        group=g,
        num_elements=n,
        kernel_size=3,
        sampling="deterministic",
        kernel=KernelSpec(hidden=8),
        rngs=nnx.Rngs(0),
    )
    conv = pg.nn.GroupConv(
        3,
        2,
        group=g,
        num_elements=n,
        kernel_size=3,
        sampling="deterministic",
        kernel=KernelSpec(hidden=8),
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


# ----------------------------------------------------------------------------- partial
def _partial_conv(sampling="random", num_scales=4):
    g = get_group("sim2", num_scales=num_scales)
    return pg.nn.GroupConv(
        2,
        2,
        group=g,
        num_elements=2 * num_scales,
        kernel_size=3,
        sampling=sampling,
        partial=True,
        kernel=KernelSpec(hidden=4),
        rngs=nnx.Rngs(0),
    )


def test_shrinking_scale_width_keeps_fewer_scales(key):
    conv = _partial_conv()
    assert conv.distribution_names == ("theta", "scale")
    g, log_range = conv.group, 3 * math.log(math.sqrt(2.0))
    for width, scales in ((1.0, 4), (0.7, 3), (0.5, 2), (0.1, 1), (-0.3, 2), (1.6, 4)):
        conv.scale[...] = jnp.float32(width)
        elements, mask = conv.sample(key, 3)
        assert float(mask.sum()) == 3 * 2 * scales
        summary = g.summarize(8, {"theta": np.float32(1), "scale": np.float32(width)})
        assert summary.axes["scale"] == {"kept": scales, "of": 4, "width": pytest.approx(width)}
        assert summary.num_elements == 2 * scales
        assert g.adaptive_count(8, {"theta": 1.0, "scale": width}) == 2 * scales
        logs = np.asarray(elements[..., 1])[np.asarray(mask) > 0]
        assert logs.min() >= 0 and logs.max() < log_range + 1e-6  # inside the rendered grid
        assert len(np.unique(np.round(logs[: 2 * scales], 6))) == scales
    # deterministic sampling, width 1: exactly the grid scales
    det = _partial_conv("deterministic")
    elements, mask = det.sample(key)
    valid = np.asarray(elements[0, :, 1])[np.asarray(mask[0]) > 0]
    np.testing.assert_allclose(np.unique(np.round(valid, 5)), 0.5 * LOG2 * np.arange(4), atol=1e-5)
    assert g.adaptive_count(8, {"keep": np.zeros(1), "scale": 1.0}) is None  # random R'


def test_gradients_reach_theta_and_the_scale_width(key):
    for width in (1.0, 0.2):  # 0.2: one scale kept, the random offset still moves it
        conv = _partial_conv(num_scales=2)
        conv.scale[...] = jnp.float32(width)
        lift = pg.nn.LiftingConv(
            1,
            2,
            group=conv.group,
            num_elements=4,
            kernel_size=3,
            kernel=KernelSpec(hidden=4),
            rngs=nnx.Rngs(1),
        )
        h = lift(jax.random.normal(key, (1, 7, 7, 1)), rngs=nnx.Rngs(sample=key))

        def loss(conv):
            out = conv(h, rngs=nnx.Rngs(sample=jax.random.fold_in(key, 1)))
            return jnp.sum(jnp.square(out.values))

        grads = nnx.grad(loss, argnums=nnx.DiffState(0, pg.nn.DistributionParam))(conv)
        assert abs(float(grads.theta[...])) > 0 and abs(float(grads.scale[...])) > 0, width


def test_adaptive_equals_masked(key):
    config = ModelConfig(
        group="sim2",
        group_options={"num_scales": 2},
        num_elements=8,
        width=2,
        kernel_hidden=4,
        kernel_size=3,
        num_blocks=1,
        block_width_factors=(2.0, 1),
        pool_blocks=(1,),
    )
    masked = build_model(config, num_classes=3, in_features=2, rngs=nnx.Rngs(0))
    for (_, layer), theta, width in zip(
        pg.models.partial_layers(masked), (0.5, 1.0, 0.3), (0.4, 1.0, 1.0), strict=True
    ):
        layer.theta[...], layer.scale[...] = jnp.float32(theta), jnp.float32(width)
    adaptive = nnx.clone(masked)
    assert pg.nn.update_adaptive(adaptive)
    assert pg.nn.active_elements(adaptive) == (2, 8, 4)
    x = jax.random.normal(key, (2, 10, 10, 2))
    labels = jnp.array([0, 2])

    @nnx.jit
    def run(model, k):
        def objective(model):
            logits = model(x, rngs=nnx.Rngs(sample=k, dropout=k))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return ce + 1e-3 * kernel_norm_penalty(model), logits

        grad_fn = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
        return grad_fn(model)

    (loss_m, logits_m), grads_m = run(masked, key)
    (loss_a, logits_a), grads_a = run(adaptive, key)
    np.testing.assert_allclose(logits_a, logits_m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss_a, loss_m, rtol=1e-5)
    flat_a = dict(nnx.to_flat_state(grads_a))
    for path, g in nnx.to_flat_state(grads_m):
        if path[-1] in ("theta", "scale"):
            np.testing.assert_allclose(flat_a[path][...], g[...], rtol=2e-4, atol=1e-6)


# ----------------------------------------------------------------------------- models
def test_model_config_group_options_round_trip():
    options = {"scale_base": 2, "num_scales": 3}
    config = ModelConfig(group="sim2", group_options=options, num_elements=6)
    assert config.group_options == (("num_scales", 3), ("scale_base", 2))
    assert config.make_group() == Sim2(3, 2.0) and hash(config) == hash(config.replace())
    train = TrainConfig(dataset="mnist6_180", model=config)
    stored = json.loads(json.dumps(train.to_dict()))
    assert TrainConfig.from_dict(stored) == train
    assert config_differences(stored, train) == []
    # config.json files written before group_options existed load with the default settings
    old = json.loads(json.dumps(TrainConfig(dataset="mnist6_180").to_dict()))
    del old["model"]["group_options"]
    assert TrainConfig.from_dict(old).model.group_options == ()
    assert config_differences(old, TrainConfig(dataset="mnist6_180")) == []
    with pytest.raises(ValueError, match="divisible by 3"):
        ModelConfig(group="sim2", group_options=options, num_elements=8)
    with pytest.raises(ValueError, match="bad settings"):
        ModelConfig(group="se2", group_options={"num_scales": 2})
    with pytest.raises(ValueError, match="must be a number or a string"):
        ModelConfig(group="sim2", group_options={"num_scales": [2]})


def test_ckresnet_sim2_partial_trains(key):
    model_config = ModelConfig(
        group="sim2",
        group_options=(("num_scales", 2), ("scale_base", 2.0)),
        num_elements=4,
        width=4,
        kernel_hidden=8,
        kernel_size=3,
        num_blocks=1,
        block_width_factors=(1.0, 1),
        pool_blocks=(1,),
    )
    config = TrainConfig(
        dataset="mnist6_180",
        model=model_config,
        batch_size=4,
        lr=1e-2,
        lr_probs=0.1,
        scheduler="constant",
    )
    model = create_model(config)
    want = model_config.make_group()
    groups = [m.group for _, m in nnx.iter_modules(model) if hasattr(m, "group")]
    assert len(groups) == 5 and all(g == want for g in groups)  # lift, 2 convs, shortcut, final
    optimizer = create_optimizer(config, model)
    before = {n: (float(c.theta[...]), float(c.scale[...])) for n, c in pg.nn.partial_layers(model)}
    k1, k2 = jax.random.split(key)
    batch = {"image": jax.random.normal(k1, (4, 28, 28, 1)), "label": jnp.array([0, 1, 1, 0])}
    out = train_step(model, optimizer, batch, k2)
    assert int(out["count"]) == 4 and math.isfinite(float(out["loss_sum"]))
    after = {n: (float(c.theta[...]), float(c.scale[...])) for n, c in pg.nn.partial_layers(model)}
    assert all(after[n][1] != before[n][1] for n in before)  # the scale widths learn
    summary = layer_summary(model)
    assert [a["scale"]["of"] for a in summary["axes"]] == [2, 2, 2]
    assert summary["elements"] == [
        a["rotation"]["kept"] * a["scale"]["kept"] for a in summary["axes"]
    ]
    # the subsets analysis and figure report both axes (N' = R' S')
    for _, layer in pg.nn.partial_layers(model):
        layer.scale[...] = jnp.float32(0.4)  # 1 of 2 scales
    subsets = learned_subsets(model, jnp.zeros((1, 28, 28, 1)))
    partial = [s for s in subsets if s.partial]
    assert [s.axes["scale"]["kept"] for s in partial] == [1, 1, 1]
    assert subsets[0].axes["scale"] == {"kept": 2, "of": 2, "width": 1.0}  # the full lift
    fig, record = figures.figure_subsets(["runs/x"], [model], [config], seed=0)
    layers = record["runs"][0]["layers"]
    assert [layer["n_prime"] for layer in layers] == [
        s.axes["rotation"]["kept"] * s.axes["scale"]["kept"] for s in subsets
    ]
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "kept scale (fraction)"


def test_haar_measure_can_be_left_out_for_an_ablation():
    elements = jnp.array([[[0.0, 0.0], [1.0, 0.5 * np.log(2.0)]]])
    with_measure = get_group("sim2").kernel_measure(elements)
    np.testing.assert_allclose(with_measure, [[1.0, 0.5]], rtol=1e-6)  # e^{-2 l}
    without = get_group("sim2", haar_measure=False)
    np.testing.assert_array_equal(without.kernel_measure(elements), [[1.0, 1.0]])
    assert without != get_group("sim2") and hash(without) != hash(get_group("sim2"))
    with pytest.raises(ValueError, match="haar_measure must be a bool"):
        get_group("sim2", haar_measure="no")
