"""Models: pinned parameter counts, shapes, masking, train/eval, Augerino, penalties, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax import models
from pgcnn_jax.models import ModelConfig

# ----------------------------------------------------------------------------- configs
PAPER_CK = ModelConfig(
    model="ckresnet",
    width=32,
    num_blocks=2,
    block_width_factors=(1, 1, 2, 1),
    kernel_hidden=32,
    kernel_size=7,
    num_elements=8,
)
T2 = dict(group="t2", num_elements=1, partial=False, sampling="deterministic")
PAPER_GCNN = ModelConfig(
    model="gcnn",
    width=128,
    num_blocks=8,
    block_width_factors=(1, 1, 2, 7),
    pool_blocks=(2, 5),
    dropout=0.3,
    dropout_blocks=(2, 5, 8),
    kernel_hidden=8,
    kernel_size=3,
    **T2,
    sample_per_layer=False,
)
FIGURE4 = ModelConfig(
    width=10,
    num_blocks=1,
    block_width_factors=(0.0,),
    pool_blocks=(1,),
    norm="layer",
    kernel_hidden=32,
    omega_0=10.0,
    kernel_size=7,
    group="se2",
    num_elements=4,
    sampling="random",
    sample_per_layer=True,
    partial=True,
)
TINY = ModelConfig(
    width=4,
    num_blocks=2,
    block_width_factors=(1, 1, 2, 1),
    kernel_size=3,
    kernel_hidden=8,
    pool_blocks=(1,),
    num_elements=4,
)
TINY_GCNN = TINY.replace(
    model="gcnn",
    num_blocks=3,
    block_width_factors=(1, 1, 2, 2),
    pool_blocks=(2,),
    dropout=0.3,
    dropout_blocks=(2, 3),
)
ELEMENTS = {"se2": 4, "e2": 4, "t2": 1, "mirror": 2}
RNGS = dict(sample=1, dropout=2)


def _count(config, num_classes, in_features):
    model = nnx.eval_shape(
        lambda: models.build_model(
            config, num_classes=num_classes, in_features=in_features, rngs=nnx.Rngs(0)
        )
    )
    return models.count_params(model)


def _build(config, num_classes=5, in_features=3, seed=0):
    return models.build_model(
        config, num_classes=num_classes, in_features=in_features, rngs=nnx.Rngs(seed)
    )


def test_public_api():
    assert models.__all__
    for name in models.__all__:
        assert hasattr(models, name), name


# ----------------------------------------------------------------------------- counts
# (RotMNIST: 1 channel, 10 classes), (CIFAR10: 3, 10), (CIFAR100: 3, 100)
DATASETS = [(10, 1), (10, 3), (100, 3)]


@pytest.mark.parametrize(
    "changes, counts",
    [
        (dict(group="se2", partial=True), (467_791, 469_903, 475_753)),
        (dict(group="se2", partial=False), (467_786, 469_898, 475_748)),
        (dict(group="e2", partial=True), (467_988, 470_100, 475_950)),
        (dict(**T2, sample_per_layer=False), (450_074, 452_186, 458_036)),
        (dict(**T2, sample_per_layer=True), (450_074, 452_186, 458_036)),  # grid never moves
    ],
)
def test_ckresnet_pinned_counts(changes, counts):
    config = PAPER_CK.replace(**changes)
    got = tuple(_count(config, c, i) for c, i in DATASETS)
    assert got == counts


def test_figure4_and_gcnn_pinned_counts():
    assert _count(FIGURE4, 2, 1) == 17_063
    assert _count(PAPER_GCNN, 10, 3) == 3_994_410
    assert _count(PAPER_GCNN, 100, 3) == 4_017_540
    assert _count(PAPER_GCNN, 10, 1) == 3_992_106
    partial = PAPER_GCNN.replace(group="se2", num_elements=8, partial=True, sampling="random")
    assert _count(partial.replace(sample_per_layer=True), 10, 3) == 3_994_418
    full = partial.replace(partial=False, sample_per_layer=False)
    assert _count(full, 10, 3) == 3_994_410


def test_variant_counts():
    # T(2) head: same kernel-net sizes; MLP pooling adds N h w + 1; Augerino adds theta (+mirror).
    full = PAPER_CK.replace(partial=False)
    base = _count(full, 10, 3)
    assert _count(full.replace(head="t2"), 10, 3) == base
    assert _count(full.replace(head="mlp", final_spatial_dim=(2, 2)), 10, 3) == base + 8 * 4 + 1
    t2 = _count(PAPER_CK.replace(**T2, sample_per_layer=False), 10, 3)
    assert _count(PAPER_CK.replace(model="augerino_ckresnet", partial=False), 10, 3) == t2 + 1
    aug_e2 = PAPER_CK.replace(model="augerino_ckresnet", group="e2", partial=False)
    assert _count(aug_e2, 10, 3) == t2 + 2
    aug_gcnn = PAPER_GCNN.replace(model="augerino_gcnn", group="se2", num_elements=8)
    assert _count(aug_gcnn, 10, 3) == 3_994_410 + 1


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


# ----------------------------------------------------------------------------- Augerino
@nnx.jit
def _jit_grad(net, x):
    """Gradient of ``sum(logits^2)`` (jit: much faster than eager differentiation on CPU)."""
    key = jax.random.key(1)
    return nnx.grad(lambda n: jnp.sum(n(x, rngs=nnx.Rngs(sample=key)) ** 2))(net)


@pytest.mark.parametrize(
    "group, element", [("se2", (math.pi / 2,)), ("se2", (math.pi,)), ("e2", (0.0, -1.0))]
)
def test_resampler_matches_exact_transform(key, group, element):
    for size in (9, 8):
        x = jax.random.normal(key, (2, size, size + 1 if group == "e2" else size, 3))
        got = models.transform_images(x, group, jnp.asarray([element]))[0]
        want = pg.testing.transform_image(x, group, element)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_resampler_identity_and_zero_padding(key):
    x = jax.random.normal(key, (2, 9, 10, 3))
    y = models.rotate_images(x, jnp.array([0.0, math.pi / 4]))
    assert y.shape == (2, 2, 9, 10, 3)
    np.testing.assert_allclose(y[0], x, atol=1e-6)
    corners = np.asarray(models.rotate_images(jnp.ones((1, 9, 9, 1)), jnp.array([math.pi / 4])))
    assert corners[0, 0, 0, 0, 0] == 0.0 and abs(corners[0, 0, 4, 4, 0] - 1.0) < 1e-6


def test_resampler_gradient_wrt_angle(key):
    x = jax.random.normal(key, (1, 9, 9, 1))
    g = jax.grad(lambda a: jnp.sum(models.rotate_images(x, a.reshape(1))[0] * x))(jnp.array(0.3))
    assert float(jnp.abs(g)) > 0


@pytest.mark.parametrize("mirror, valid", [(10.0, 4), (-10.0, 2)])
def test_augerino_mirror_copies(key, mirror, valid):
    net = _build(TINY.replace(model="augerino_ckresnet", group="e2", partial=False))
    assert isinstance(net.theta, models.AugmentationParam)
    assert not isinstance(net.theta, pg.nn.DistributionParam)
    net.theta[...] = 1.0  # R' = R = 2 rotations, doubled if the mirror fires
    net.mirror[...] = mirror
    elements, mask = net.sample_augmentations(jax.random.key(3))
    assert int(jnp.sum(mask)) == valid
    if valid == 4:
        np.testing.assert_array_equal(elements[:, 1], [1, 1, -1, -1])
        np.testing.assert_allclose(elements[2:, 0], elements[:2, 0])
    x = jax.random.normal(key, (2, 9, 9, 3))
    grads = _jit_grad(net, x)
    assert float(jnp.abs(grads["theta"][...])) > 0  # through the differentiable rotation
    assert float(grads["mirror"][...]) == 0.0  # the flip is not differentiable (reference)


@pytest.mark.parametrize("model", ["augerino_ckresnet", "augerino_gcnn"])
def test_augerino_averages_valid_copies_only(key, model):
    base = TINY_GCNN.replace(dropout=0.0) if model == "augerino_gcnn" else TINY
    net = _build(base.replace(model=model, num_elements=4, partial=False))
    net.theta[...] = 0.4  # N' = 2 of 4 slots
    x = jax.random.normal(key, (2, 9, 9, 3))
    backbone = nnx.clone(net.backbone)
    y = net(x, rngs=nnx.Rngs(sample=5))
    elements, mask = net.sample_augmentations(nnx.Rngs(sample=5).sample())
    np.testing.assert_array_equal(mask, [1, 1, 0, 0])
    copies = models.transform_images(x, "se2", elements[:2])  # [2, B, H, W, C]
    want = backbone(copies.reshape(4, 9, 9, 3)).reshape(2, 2, -1).mean(axis=0)
    np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-4)


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


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise(key):
    net = _build(TINY)
    with pytest.raises(ValueError, match=r"\(2, 9, 9\)"):
        net(jnp.zeros((2, 9, 9)), rngs=nnx.Rngs(**RNGS))
    with pytest.raises(ValueError, match=r"\(2, 9, 9, 1\)"):
        net(jnp.zeros((2, 9, 9, 1)), rngs=nnx.Rngs(**RNGS))
    with pytest.raises(ValueError, match="3x3"):
        net(jnp.zeros((1, 4, 4, 3)), rngs=nnx.Rngs(**RNGS))
    mlp = _build(TINY.replace(partial=False, head="mlp", final_spatial_dim=(1, 1)))
    with pytest.raises(ValueError, match="final_spatial_dim"):
        mlp(jnp.zeros((1, 9, 9, 3)), rngs=nnx.Rngs(**RNGS))
    aug = _build(TINY.replace(model="augerino_ckresnet"))
    with pytest.raises(ValueError, match="rngs"):
        aug(jnp.zeros((1, 9, 9, 3)))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(block_width_factors=(1, 1, 2)), r"\(1, 1, 2\)"),
        (dict(block_width_factors=(1, 1, 2, 2)), "num_blocks"),
        (dict(block_width_factors=(1, 0.5)), "0.5"),
        (dict(pool_blocks=(3,)), r"\(3,\)"),
        (dict(model="gcnn", head="t2", partial=False), "'t2'"),
        (dict(model="gcnn", dropout_blocks=(0,)), r"\(0,\)"),
        (dict(model="augerino_ckresnet", **T2), "'t2'"),
        (dict(sampling="deterministic", sample_per_batch_element=True), "random"),
    ],
)
def test_bad_configs_raise(changes, match):
    with pytest.raises(ValueError, match=match):
        _build(TINY.replace(**changes))


def test_build_model_argument_checks():
    with pytest.raises(ValueError, match="num_classes"):
        _build(TINY, num_classes=0)
    with pytest.raises(ValueError, match="in_features"):
        _build(TINY, in_features=-1)
    with pytest.raises(ValueError, match="ModelConfig"):
        models.build_model({"model": "ckresnet"}, num_classes=2, in_features=1, rngs=nnx.Rngs(0))


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
