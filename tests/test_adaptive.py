"""Adaptive execution (DESIGN 4, issue 8 item 4): partial layers on exactly N' slots give the
numbers of the masked execution, and a step compiles once per tuple of sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import TINY_W3
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.models import ModelConfig, build_model, kernel_norm_penalty


def _model(group, n, thetas, mirror=None, **kw):
    config = TINY_W3.replace(group=group, num_elements=n, **kw)
    model = build_model(config, num_classes=3, in_features=2, rngs=nnx.Rngs(0))
    layers = [c for _, c in pg.models.partial_layers(model)]
    for layer, theta in zip(layers, thetas, strict=True):
        layer.theta[...] = jnp.asarray(theta, jnp.float32)
        if mirror is not None:
            layer.mirror[...] = jnp.asarray(mirror, jnp.float32)
    return model


def _loss(model, x, labels, key):
    logits = model(x, rngs=nnx.Rngs(sample=key, dropout=jax.random.fold_in(key, 1)))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return ce + 1e-3 * kernel_norm_penalty(model), logits


@nnx.jit
def _outputs_and_grads(model, x, labels, key):
    grad_fn = nnx.value_and_grad(_loss, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
    (loss, logits), grads = grad_fn(model, x, labels, key)
    return loss, logits, grads


@pytest.mark.parametrize(
    "group,n,thetas,mirror,expected",
    [
        # SE2, 6 rotations: N' = ceil(6 theta) = 3, 2, 1.
        ("se2", 6, (0.5, 0.3, 0.1), None, (3, 2, 1)),
        # E2, R = 3: 2 R' slots with R' = |ceil(3 theta)| (signed: ceil(-1.8) -> 1, not 2);
        # the mirror fires (almost surely) / does not.
        ("e2", 6, (0.5, -0.6, 0.2), 3.0, (4, 2, 2)),
        ("e2", 6, (0.5, -0.6, 0.2), -3.0, (4, 2, 2)),
    ],
)
def test_adaptive_equals_masked(key, group, n, thetas, mirror, expected):
    masked = _model(group, n, thetas, mirror)
    adaptive = nnx.clone(masked)
    sizes = pg.nn.adaptive_sizes(adaptive)
    assert sizes == expected
    pg.nn.set_active_elements(adaptive, sizes)
    assert pg.nn.active_elements(adaptive) == expected
    assert pg.nn.active_elements(masked) == (None,) * 3
    masked.train()
    adaptive.train()
    x = jax.random.normal(jax.random.fold_in(key, 0), (2, 8, 8, 2))
    labels = jnp.array([0, 2])
    for i in range(2):  # two sampling keys
        k = jax.random.fold_in(key, 10 + i)
        loss_m, logits_m, grads_m = _outputs_and_grads(masked, x, labels, k)
        loss_a, logits_a, grads_a = _outputs_and_grads(adaptive, x, labels, k)
        np.testing.assert_allclose(logits_a, logits_m, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(loss_a, loss_m, rtol=1e-5)
        flat_m = nnx.to_flat_state(grads_m)
        flat_a = dict(nnx.to_flat_state(grads_a))
        assert len(flat_m) == len(flat_a)
        # Gradients that are rounding noise (e.g. a bias right before a BatchNorm, ~1e-6)
        # differ by rounding: absolute tolerance relative to the largest gradient.
        scale = max(float(jnp.max(jnp.abs(g[...]))) for _, g in flat_m)
        for path, g in flat_m:
            np.testing.assert_allclose(
                flat_a[path][...], g[...], rtol=2e-4, atol=1e-5 * scale, err_msg=str(path)
            )
        thetas_grad = [g[...] for p, g in flat_m if p[-1] == "theta"]
        assert len(thetas_grad) == 3 and any(abs(float(t)) > 0 for t in thetas_grad)
        # BatchNorm running statistics moved alike.
        stats_m = nnx.to_flat_state(nnx.state(masked, nnx.BatchStat))
        stats_a = dict(nnx.to_flat_state(nnx.state(adaptive, nnx.BatchStat)))
        for path, v in stats_m:
            np.testing.assert_allclose(stats_a[path][...], v[...], rtol=1e-5, atol=1e-6)


def test_adaptive_shrinks_the_features(key):
    """The adaptive layers really run on N' slots (the point of the exercise)."""
    model = _model("se2", 8, (0.5, 0.25, 0.5))
    pg.nn.update_adaptive(model)
    conv = model.blocks[0].conv2
    h = pg.nn.GroupFeatures(
        jnp.ones((1, 6, 6, 4, 6)), jnp.zeros((1, 4, 1)), jnp.ones((1, 4), jnp.float32)
    )
    out = conv(h, rngs=nnx.Rngs(sample=key))
    assert out.values.shape == (1, 6, 6, 2, 6) and out.elements.shape == (1, 2, 1)


@pytest.mark.parametrize("kw", [dict(head="t2"), dict(model="gcnn", dropout=0.1)])
def test_adaptive_equals_masked_other_heads(key, kw):
    n_layers = 1 if kw.get("model") == "gcnn" else 2
    thetas = (0.5, 0.2)[:n_layers]
    masked = _model("se2", 4, thetas, **kw)
    adaptive = nnx.clone(masked)
    assert pg.nn.update_adaptive(adaptive)
    assert pg.nn.active_elements(adaptive) == (2, 1)[:n_layers]
    x = jax.random.normal(key, (2, 8, 8, 2))

    @nnx.jit
    def forward(model, x):
        rngs = nnx.Rngs(sample=jax.random.fold_in(key, 1), dropout=jax.random.fold_in(key, 2))
        return model(x, rngs=rngs), kernel_norm_penalty(model)

    ym, norm_m = forward(masked, x)
    ya, norm_a = forward(adaptive, x)
    np.testing.assert_allclose(ya, ym, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm_a, norm_m, rtol=1e-5)


def test_recompiles_only_when_a_size_changes(key):
    model = _model("se2", 4, (0.5, 0.5, 0.5))
    model.train()
    traces = []

    @nnx.jit
    def step(model, x, key):
        traces.append(1)
        loss, grads = nnx.value_and_grad(lambda m: _loss(m, x, jnp.zeros(2, jnp.int32), key)[0])(
            model
        )
        return loss

    x = jax.random.normal(key, (2, 8, 8, 2))
    changes = []

    def run(thetas):
        for layer, t in zip(pg.models.partial_layers(model), thetas, strict=True):
            layer[1].theta[...] = jnp.float32(t)
        changes.append(pg.nn.update_adaptive(model))
        step(model, x, jax.random.fold_in(key, len(changes)))
        return len(traces)

    assert run((0.5,) * 3) == 1 and changes == [True]  # 4 -> 2 slots: the first compile
    assert run((0.45,) * 3) == 1  # ceil(4 * 0.45) = 2: same sizes, no retrace
    assert run((0.3,) * 3) == 1
    assert run((0.3, 0.8, 0.3)) == 2  # one layer grows to 4 slots: one new compile
    assert run((0.3, 0.9, 0.3)) == 2
    assert run((0.5,) * 3) == 2  # back to sizes seen before: nnx.jit's graphdef cache
    assert run((0.2, 0.6, 0.3)) == 3  # (1, 3, 2): new sizes
    assert changes == [True, False, False, True, False, True, True]


def test_stale_size_raises_eagerly_and_poisons_under_jit(key):
    conv = pg.nn.GroupConv(2, 2, group="se2", num_elements=4, kernel_size=3, partial=True,
                           kernel=pg.KernelSpec(hidden=4), rngs=nnx.Rngs(0))  # fmt: skip
    conv.theta[...] = jnp.float32(0.5)
    assert pg.nn.update_adaptive(conv) and conv.active_elements == 2
    conv.theta[...] = jnp.float32(1.0)  # 4 valid slots now, 2 active
    h = pg.nn.GroupFeatures(jnp.ones((1, 5, 5, 4, 2)), jnp.zeros((1, 4, 1)), jnp.ones((1, 4)))
    with pytest.raises(ValueError, match="stale"):
        conv(h, rngs=nnx.Rngs(sample=key))
    y = nnx.jit(lambda c, h: c(h, rngs=nnx.Rngs(sample=key)).values)(conv, h)
    assert np.all(np.isnan(np.asarray(y)))
    assert pg.nn.update_adaptive(conv) and conv.active_elements == 4
    assert np.all(np.isfinite(conv(h, rngs=nnx.Rngs(sample=key)).values))


def test_sizes_for_masked_layers_and_bad_input():
    det = build_model(
        TINY_W3.replace(group="se2", num_elements=4, sampling="deterministic"),
        num_classes=3,
        in_features=2,
        rngs=nnx.Rngs(0),
    )
    assert pg.nn.adaptive_sizes(det) == (None,) * 3  # keep sampling: random count per step
    with pytest.raises(ValueError, match="must be None"):
        pg.nn.set_active_elements(det, (2, None, None))
    model = _model("se2", 4, (0.5,) * 3)
    with pytest.raises(ValueError, match="got 2 sizes"):
        pg.nn.set_active_elements(model, (2, 2))
    with pytest.raises(ValueError, match=r"outside \[1, 4\]"):
        pg.nn.set_active_elements(model, (5, 2, 2))
    with pytest.raises(ValueError, match="int or None"):
        pg.nn.set_active_elements(model, (2.0, 2, 2))
    model.blocks[0].conv1.theta[...] = jnp.float32(jnp.nan)
    with pytest.raises(ValueError, match="not finite"):
        pg.nn.adaptive_sizes(model)
    full = _model("se2", 4, (), partial=False)
    assert pg.nn.adaptive_sizes(full) == () and not pg.nn.update_adaptive(full)


def test_execution_config():
    with pytest.raises(ValueError, match="unknown execution 'fast'"):
        ModelConfig(execution="fast")
    config = TINY_W3.replace(group="e2", num_elements=4, execution="adaptive")
    model = build_model(config, num_classes=3, in_features=2, rngs=nnx.Rngs(0))
    assert pg.nn.active_elements(model) == (4,) * 3  # theta = 1 at the start: all slots


def test_bench_adaptive_runs_smaller_convs():
    from experiments import bench

    tiny = dict(width=2, kernel_size=3, image_size=6, batch=1, steps=1, warmup=0)
    extra = dict(num_blocks=1, block_width_factors=(1, 1), pool_blocks=(1,), kernel_hidden=4)
    r = bench.run_config("se2-4-partial-half", **tiny, extra=extra, execution="adaptive")
    assert r["execution"] == "adaptive" and r["active_elements"] == [2] * 3  # theta 0.5, N = 4
    kernels = {tuple(rhs) for _, rhs, _, _ in r["conv_shapes"]}
    # Group-conv kernels [3, 3, N_in C, N_out C] on N' = 2 slots (C = 2), none on all N = 4.
    assert (3, 3, 4, 4) in kernels and (3, 3, 8, 8) not in kernels


# ----------------------------------------------------------------------------- training loop


def test_training_loop_adaptive_equals_masked(tmp_path):
    """``train_and_evaluate`` with ``execution="adaptive"`` follows the masked run: the same
    losses, accuracies and thetas epoch by epoch, while its layers' sizes shrink with theta
    (so the loop split the runner again and compiled for new sizes)."""
    from _helpers import TINY, read_metrics, write_mnist_npz  # tests/ is on sys.path

    from pgcnn_jax.train import TrainConfig, train_and_evaluate

    data = write_mnist_npz(tmp_path / "mnist.npz", num_train_sixes=4)  # 2 steps an epoch
    base = TrainConfig(
        dataset="mnist6_180", data=data, model=TINY, epochs=2, batch_size=4, lr=1e-2,
        lr_probs=0.2, scheduler="constant",
    )  # fmt: skip
    runs = {}
    for execution in ("masked", "adaptive"):
        config = base.replace(model=TINY.replace(execution=execution))
        runs[execution] = train_and_evaluate(config, tmp_path / execution, progress=False)
    masked, adaptive = (read_metrics(tmp_path / e) for e in ("masked", "adaptive"))
    # Biases in front of a norm get a gradient that is float noise (the norm removes them), and
    # Adam turns noise into steps of size lr: those biases differ between any two summation
    # orders. They leave training (batch statistics) unchanged, so training metrics and thetas
    # agree tightly; evaluation (running statistics) sees them, so validation only to 1e-2.
    for a, b in zip(masked, adaptive, strict=True):
        for k in ("train_loss", "train_accuracy"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(b["theta"], a["theta"], rtol=1e-4, atol=1e-5)
        assert b["elements"] == a["elements"]
        np.testing.assert_allclose(b["val_loss"], a["val_loss"], rtol=1e-2)
    n = TINY.num_elements
    assert any(e < n for r in adaptive for e in r["elements"]), adaptive[-1]["elements"]
    assert runs["adaptive"]["test_loss"] == pytest.approx(runs["masked"]["test_loss"], rel=1e-2)
