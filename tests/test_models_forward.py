"""Models, forward and backward: output shapes, masking, sampling variants, invariance, train and
eval modes, dropout, jit gradients, the penalties and the T2 head."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import MODEL_RNGS as RNGS
from _helpers import MODEL_TINY as TINY
from _helpers import MODEL_TINY_GCNN as TINY_GCNN
from _helpers import build as _build
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax import models

ELEMENTS = {"se2": 4, "e2": 4, "t2": 1, "mirror": 2}


# ----------------------------------------------------------------------------- shapes
def _shape_cases():
    cases = []
    for group, n in ELEMENTS.items():
        partial = group != "t2"
        cases.append(("ckresnet", group, "pool", partial))
        cases.append(("ckresnet", group, "t2", partial))
        cases.append(("ckresnet", group, "mlp", False))
        cases.append(("gcnn", group, "pool", partial))
        if group != "t2":
            cases.append(("augerino_ckresnet", group, "pool", False))
    cases.append(("augerino_gcnn", "e2", "pool", False))
    return cases


@pytest.mark.parametrize("model, group, head, partial", _shape_cases())
def test_output_shapes(key, model, group, head, partial):
    base = TINY_GCNN if "gcnn" in model else TINY
    config = base.replace(
        model=model,
        group=group,
        num_elements=ELEMENTS[group],
        head=head,
        partial=partial,
        final_spatial_dim=(2, 2),
    )
    net = _build(config)
    x = jax.random.normal(key, (2, 9, 9, 3))
    y = net(x, rngs=nnx.Rngs(**RNGS))
    assert y.shape == (2, 5)
    assert bool(jnp.all(jnp.isfinite(y)))


# ----------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize(
    "changes",
    [
        dict(sample_per_batch_element=True),  # S = B element sets (MNIST6-180 partial run)
        dict(group="e2", sampling="deterministic", sample_per_layer=False),  # keep params
    ],
)
def test_sampling_variants(key, changes):
    net = _build(TINY.replace(**changes))
    y = net(jax.random.normal(key, (3, 9, 9, 3)), rngs=nnx.Rngs(**RNGS))
    assert y.shape == (3, 5) and bool(jnp.all(jnp.isfinite(y)))
    assert len(models.partial_layers(net)) == 5


def test_partial_theta_half_masks_and_logs(key):
    net = _build(TINY)
    layers = models.partial_layers(net)
    names = [n for n, _ in layers]
    assert names == ["block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2", "final_conv"]
    for _, conv in layers:
        conv.theta[...] = 0.5
    x = jax.random.normal(key, (2, 9, 9, 3))
    y = net(x, rngs=nnx.Rngs(**RNGS))
    assert bool(jnp.all(jnp.isfinite(y)))
    _, mask = layers[0][1].sample(jax.random.key(0))
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0]])


@pytest.mark.parametrize("model", ["ckresnet", "gcnn"])
def test_invariance_to_90_degree_rotations(key, model):
    # Deterministic full SE2 grid, even map sizes: logits are exactly invariant.
    base = TINY_GCNN if model == "gcnn" else TINY
    config = base.replace(
        partial=False, sampling="deterministic", sample_per_layer=False, dropout=0.0
    )
    net = _build(config)
    x = jax.random.normal(key, (2, 12, 12, 3))
    y = net(x)
    y_rot = net(pg.testing.transform_image(x, "se2", (math.pi / 2,)))
    np.testing.assert_allclose(y_rot, y, atol=1e-4, rtol=1e-4)


def test_train_eval_modes(key):
    net = _build(TINY.replace(group="e2"))
    conv = net.blocks[0].conv1
    bn = net.stem_norm
    x = jax.random.normal(key, (4, 9, 9, 3))
    net(x, rngs=nnx.Rngs(**RNGS))
    var = np.asarray(bn.var[...])
    assert not np.allclose(var, 1.0)  # running statistics moved in training
    assert int(conv.gumbel_step[...]) == 0  # counts optimiser steps, not forwards
    net.eval()
    assert bn.use_running_average and conv.deterministic
    y1 = net(x, rngs=nnx.Rngs(**RNGS))
    y2 = net(x[:2], rngs=nnx.Rngs(**RNGS))
    np.testing.assert_array_equal(bn.var[...], var)  # frozen in eval
    np.testing.assert_allclose(y1[:2], y2, atol=1e-5)  # no batch statistics in eval
    net.train()
    assert not bn.use_running_average


def test_gcnn_channel_dropout(key):
    config = TINY_GCNN.replace(
        group="t2", num_elements=1, partial=False, dropout=0.5, dropout_blocks=(1,)
    )
    net = _build(config)
    x = jax.random.normal(key, (3, 8, 8, 3))
    h = net.lift(x)
    h = net.blocks[0](h, rngs=nnx.Rngs(dropout=3))
    v = np.asarray(h.values)
    dropped = np.all(v == 0, axis=(1, 2, 3))  # [B, C]: whole channels are zeroed
    assert dropped.any() and not dropped.all()
    y_train = net(x, rngs=nnx.Rngs(dropout=1))
    assert not np.allclose(y_train, net(x, rngs=nnx.Rngs(dropout=2)))
    net.eval()
    np.testing.assert_allclose(net(x, rngs=nnx.Rngs(dropout=1)), net(x, rngs=nnx.Rngs(dropout=2)))


def test_jit_value_and_grad(key):
    net = _build(TINY.replace(group="e2"))
    labels = jnp.array([0, 3])
    traces = []

    @nnx.jit
    def step(net, x, key):
        traces.append(1)

        def loss_fn(net):
            logits = net(x, rngs=nnx.Rngs(sample=key, dropout=key))
            ce = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
            reg = 1e-4 * models.kernel_norm_penalty(net)
            return ce + reg + models.monotonic_penalty(net, 1e-3)

        return nnx.value_and_grad(loss_fn)(net)

    for i in range(2):
        x = jax.random.normal(jax.random.fold_in(key, i), (2, 9, 9, 3))
        loss, grads = step(net, x, jax.random.key(i))
        assert np.isfinite(float(loss))
    assert len(traces) == 1
    theta_grad = grads["blocks"][0]["conv1"]["theta"][...]
    assert float(jnp.abs(theta_grad)) > 0


# ----------------------------------------------------------------------------- penalties
def test_monotonic_penalty_values():
    net = _build(TINY)
    thetas = [1.0, 0.5, 0.7, 0.7, 0.9]
    for (_, conv), t in zip(models.partial_layers(net), thetas, strict=True):
        conv.theta[...] = t
    np.testing.assert_allclose(models.monotonic_penalty(net, 2.0), 2.0 * 0.4, rtol=1e-6)

    e2 = _build(TINY.replace(group="e2"))
    mirrors = [0.0, 1.0, 0.5, 0.5, 2.0]
    for (_, conv), t, m in zip(models.partial_layers(e2), thetas, mirrors, strict=True):
        conv.theta[...], conv.mirror[...] = t, m
    np.testing.assert_allclose(models.monotonic_penalty(e2, 1.0), 0.4 + 1.0 + 1.5, rtol=1e-6)

    full = _build(TINY.replace(partial=False))
    assert models.partial_layers(full) == []
    assert float(models.monotonic_penalty(full, 1.0)) == 0.0
    with pytest.raises(ValueError, match="CKResNet"):
        models.monotonic_penalty(_build(TINY_GCNN), 1.0)


def test_kernel_norm_penalty_positive_and_differentiable(key):
    net = _build(TINY_GCNN.replace(dropout=0.0))
    x = jax.random.normal(key, (2, 9, 9, 3))
    assert float(models.kernel_norm_penalty(net)) == 0.0  # nothing rendered yet

    @nnx.jit
    def value_and_grad(net, x, key):
        def loss(net):
            net(x, rngs=nnx.Rngs(sample=key))
            return models.kernel_norm_penalty(net)

        return nnx.value_and_grad(loss)(net)

    value, grads = value_and_grad(net, x, jax.random.key(1))
    assert float(value) > 0
    g = grads["lift"]["kernel_net"]["layers"][2]["kernel"][...]
    assert float(jnp.max(jnp.abs(g))) > 0


def test_t2_head_kernel_norm_gradient_is_finite(key):
    conv = models.T2FinalConv(3, 2, group="e2", kernel_size=3, rngs=nnx.Rngs(0))
    h = pg.nn.GroupFeatures(
        jax.random.normal(key, (1, 5, 5, 2, 3)), jnp.zeros((1, 2, 2)), jnp.ones((1, 2))
    )

    def penalty(conv):
        conv(h)
        return models.kernel_norm_penalty(conv)

    grads = nnx.grad(penalty)(conv)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert float(jnp.max(jnp.abs(grads["kernel_net"]["layers"][2]["kernel"][...]))) > 0
