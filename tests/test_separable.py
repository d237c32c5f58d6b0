"""Kernel specs and separable group convolutions (issue 9, items 2-3)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pgcnn_jax as pg
import pgcnn_jax.nn._render as render_module
from pgcnn_jax.kernels import KernelSpec, disc_mask, relative_positions
from pgcnn_jax.models import ModelConfig, build_model
from pgcnn_jax.models._common import kernel_settings
from pgcnn_jax.testing import assert_equivariant, equivariance_error
from pgcnn_jax.train import TrainConfig, config_differences

TOL = dict(atol=1e-5, rtol=1e-5)


def _lift(group, n, c_out=3, k=5, **kw):
    kw.setdefault("sampling", "deterministic")
    return pg.nn.LiftingConv(2, c_out, group=group, num_elements=n, kernel_size=k,
                             kernel=KernelSpec(hidden=8), rngs=nnx.Rngs(0), **kw)  # fmt: skip


def _sep(group, n, c_in=3, c_out=2, k=5, **kw):
    kw.setdefault("sampling", "deterministic")
    return pg.nn.GroupConv(c_in, c_out, group=group, num_elements=n, kernel_size=k,
                           kernel=KernelSpec(hidden=8), separable=True, rngs=nnx.Rngs(1),
                           **kw)  # fmt: skip


def _dense_reference(conv, g_out, g_in, mask_out, mask_in):
    """The joint kernel ``psi(p, u, v)[o, c] = psi_S(A(u)^-1 p)[o] psi_G(u^-1 v)[o, c]`` built
    from the layer's own nets, HWIO ``[k, k, N_in C_in, N_out C_out]`` (one sample row)."""
    group, k = conv.group, conv.kernel_size
    net = conv.kernel_net
    rotated = jnp.einsum("nab,yxb->nyxa", group.inverse_matrix(g_out), relative_positions(k))
    psi_s = net.spatial(rotated) * disc_mask(k)[None, :, :, None]  # [No, k, k, Co]
    rel = group.normalize(group.relative(g_out[None], g_in[None]))[0]  # [No, Ni, d]
    n_out, n_in = rel.shape[:2]
    psi_g = net.group(rel).reshape(n_out, n_in, conv.out_features, conv.in_features)
    psi_g = psi_g * (mask_out[:, None] * mask_in[None, :])[:, :, None, None]
    psi = jnp.einsum("uyxo,uvoc->yxvcuo", psi_s, psi_g)
    return psi.reshape(k, k, n_in * conv.in_features, n_out * conv.out_features)


@pytest.mark.parametrize("group, partial", [("se2", False), ("e2", False), ("se2", True)])
def test_separable_equals_dense_reference_and_its_norm(key, group, partial):
    lift = _lift(group, 4 if group == "se2" else 8)
    conv = _sep(group, lift.num_elements, sampling="random", partial=partial)
    if partial:
        conv.theta[...] = 0.6
    conv.bias[...] = jnp.arange(2.0) + 0.5
    f = lift(jax.random.normal(key, (2, 9, 9, 2)))
    h = conv(f, rngs=nnx.Rngs(sample=3))
    w = _dense_reference(conv, h.elements[0], f.elements[0], h.mask[0], f.mask[0])
    y = pg.nn.conv2d(f.values.reshape(2, 9, 9, -1), w[None], "same")
    y = y.reshape(h.values.shape) + conv.bias[...].reshape(1, 1, 1, 1, -1)
    y = y * pg.nn.broadcast_mask(h.mask)
    np.testing.assert_allclose(h.values, y, **TOL)
    if partial:
        assert 0 < float(jnp.sum(h.mask)) < h.mask.size  # some slots masked
    # (d) the penalty's norm is the norm of the equivalent joint kernel (plus the bias norm)
    expected = jnp.linalg.norm(w) + jnp.linalg.norm(conv.bias[...])
    np.testing.assert_allclose(conv.kernel_norm[...], expected, rtol=1e-5)


@pytest.mark.parametrize("group", ["se2", "e2"])
def test_separable_group_conv_is_exactly_equivariant(key, group):
    n = 4 if group == "se2" else 8
    lift, conv = _lift(group, n, k=7), _sep(group, n, k=7)
    x = jax.random.normal(key, (1, 13, 13, 2))

    def fn(x):
        return conv(lift(x).replace_values(jax.nn.relu(lift(x).values)))

    reports = assert_equivariant(fn, x, group, **TOL)
    assert len(reports) == (3 if group == "se2" else 7)  # rot90s (and the 4 flips for E2)
    quarter = (np.pi / 2,) if group == "se2" else (np.pi / 2, 1.0)
    wrong = equivariance_error(fn, x, group, quarter, wrong_direction=True)
    assert wrong.relative_error > 1e-2


def test_unrotated_spatial_factor_is_not_equivariant(key, monkeypatch):
    """Negative control: psi_S on unrotated positions (p instead of A(u)^-1 p) breaks it."""
    lift, conv = _lift("se2", 4, k=7), _sep("se2", 4, k=7)
    x = jax.random.normal(key, (1, 13, 13, 2))
    fn = lambda x: conv(lift(x))  # noqa: E731
    assert equivariance_error(fn, x, "se2", (np.pi / 2,)).relative_error < 1e-5

    def unrotated(group, g, k):
        return jnp.broadcast_to(relative_positions(k), (*g.shape[:2], k, k, 2))

    monkeypatch.setattr(render_module, "_rotated_positions", unrotated)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(fn, x, "se2", [(np.pi / 2,)], **TOL)


def test_masked_partial_slots_are_zero_and_theta_gets_gradients(key):
    lift = _lift("se2", 8, sampling="random")
    conv = _sep("se2", 8, sampling="random", partial=True)
    conv.theta[...] = 0.5
    f = lift(jax.random.normal(key, (2, 9, 9, 2)), rngs=nnx.Rngs(sample=1))

    def loss(conv):
        h = conv(f, rngs=nnx.Rngs(sample=2))
        return jnp.sum(h.values**2) + conv.kernel_norm[...], h

    (_, h), grads = nnx.value_and_grad(loss, has_aux=True)(conv)
    assert float(jnp.sum(h.mask)) == 4.0
    invalid = np.asarray(h.mask[0]) == 0
    assert np.all(np.asarray(h.values)[:, :, :, invalid] == 0)
    g_theta = float(grads.theta[...])
    assert np.isfinite(g_theta) and g_theta != 0
    # adaptive execution: the first 4 slots, the same numbers
    pg.nn.set_active_elements(conv, [4])
    h4 = conv(f, rngs=nnx.Rngs(sample=2))
    np.testing.assert_allclose(h4.values, h.values[:, :, :, :4], **TOL)


def test_separable_flops_are_over_10x_fewer(key):
    """Whole-layer forward (kernel nets, rendering and convolutions) of an SE2 N=8, 7x7,
    32 -> 32 group conv on a 16x16 map, batch 1, from XLA's compiled cost analysis."""
    lift = pg.nn.LiftingConv(1, 32, group="se2", num_elements=8, kernel_size=7,
                             sampling="deterministic", rngs=nnx.Rngs(0))  # fmt: skip
    f = lift(jnp.ones((1, 16, 16, 1)))

    def flops(separable):
        conv = pg.nn.GroupConv(32, 32, group="se2", num_elements=8, kernel_size=7,
                               sampling="deterministic", sample_per_layer=False,
                               separable=separable, rngs=nnx.Rngs(1))  # fmt: skip
        graphdef, state = nnx.split(conv)

        def forward(state, f):
            return nnx.merge(graphdef, state)(f).values

        cost = jax.jit(forward).lower(state, f).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost["flops"])

    joint, separable = flops(False), flops(True)
    assert joint > 1e9  # the dense 7x7 conv alone is 1.6 GFLOP
    assert joint / separable >= 10, (joint, separable)


def test_per_example_separable_equals_one_example_at_a_time(key):
    lift = _lift("e2", 8, sampling="random", sample_per_batch_element=True)
    conv = _sep("e2", 8, sampling="random", sample_per_layer=False, sample_per_batch_element=True)
    f = lift(jax.random.normal(key, (3, 9, 9, 2)), rngs=nnx.Rngs(sample=4))
    assert f.elements.shape[0] == 3
    h = conv(f)
    bias = float(jnp.linalg.norm(conv.bias[...]))
    norm, squares = float(conv.kernel_norm[...]), 0.0
    for b in range(3):
        one = pg.nn.GroupFeatures(f.values[b : b + 1], f.elements[b : b + 1], f.mask[b : b + 1])
        np.testing.assert_allclose(h.values[b : b + 1], conv(one).values, **TOL)
        squares += (float(conv.kernel_norm[...]) - bias) ** 2
    np.testing.assert_allclose(norm, np.sqrt(squares) + bias, rtol=1e-5)


def test_bfloat16_separable_matches_float32_and_differentiates(key):
    lift = _lift("se2", 4)
    f = lift(jax.random.normal(key, (2, 9, 9, 2)))
    conv = _sep("se2", 4)
    y32 = conv(f).values
    conv16 = _sep("se2", 4, precision="bfloat16")
    y16 = conv16(f).values
    np.testing.assert_allclose(y16, y32, atol=3e-2 * float(jnp.max(jnp.abs(y32))))
    grads = nnx.grad(lambda c: jnp.sum(c(f).values ** 2))(conv16)
    leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


# ----------------------------------------------------------------------------- KernelSpec


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(net="sirens"), "'sirens'"),
        (dict(hidden=0), "hidden.*0"),
        (dict(layers=1), "layers >= 2, got 1"),
        (dict(net="magnet", layers=0), "layers.*0"),
        (dict(options=dict(omega_0=-1.0)), "omega_0.*-1.0"),
        (dict(net="fourier", options=dict(input_scale=float("nan"))), "input_scale.*nan"),
        (dict(net="gabor", options=dict(alpha=0.0)), "alpha.*0.0"),
        (dict(net="magnet", options=dict(beta=-2.0)), "beta.*-2.0"),
        (dict(options=dict(alpha=1.0)), r"'siren' has no setting\(s\) \['alpha'\]"),
        (dict(render="dense"), "'dense'"),
        (dict(spatial_hidden=0), "spatial_hidden.*0"),
    ],
)
def test_kernel_spec_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        KernelSpec(**changes)
    with pytest.raises(ValueError, match=match):
        KernelSpec().replace(**changes)


def test_kernel_spec_is_frozen_and_hashable():
    spec = KernelSpec("gabor", hidden=16)
    assert hash(spec) == hash(KernelSpec("gabor", hidden=16))
    assert {spec: 1}[spec.replace()] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hidden = 8
    assert KernelSpec(layers=1, net="fourier").layers == 1  # MFNs need L >= 1 only
    with pytest.raises(ValueError, match="KernelSpec or a kernel-net name, got 3"):
        pg.nn.GroupConv(2, 2, group="se2", num_elements=4, kernel=3, rngs=nnx.Rngs(0))


def _params(net):
    return jax.tree.leaves(nnx.state(net, nnx.Param))


@pytest.mark.parametrize("net", ["gabor", "magnet", "fourier"])
def test_mfn_settings_reach_the_net(net):
    settings = dict(input_scale=32.0) | ({} if net == "fourier" else dict(alpha=2.0, beta=3.0))
    spec = KernelSpec(net, hidden=8, layers=2, options=settings)
    cls = {"fourier": pg.kernels.FourierNet, "gabor": pg.kernels.GaborNet}.get(
        net, pg.kernels.MAGNet
    )
    kw = {} if net == "fourier" else dict(alpha=2.0, beta=3.0)
    direct = cls(4, 6, hidden=8, num_layers=2, input_scale=32.0, rngs=nnx.Rngs(0), **kw)
    default = cls(4, 6, hidden=8, num_layers=2, rngs=nnx.Rngs(0))
    built = spec.make_net(4, 6, rngs=nnx.Rngs(0))
    for a, b in zip(_params(built), _params(direct), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(_params(built), _params(default)))
    # through a model config (whose convs all get kernel_settings; see the model test below),
    # also by the flat names of the settings (the CLIs' --set keys)
    config = ModelConfig(kernel=spec)
    flat = {f"mfn_{k}": v for k, v in settings.items()}
    assert config == ModelConfig(kernel=net, kernel_hidden=8, kernel_layers=2, **flat)
    assert config == ModelConfig().replace(kernel=net, kernel_hidden=8, kernel_layers=2, **flat)
    assert kernel_settings(config)["kernel"] == spec


def test_make_kernel_net_keeps_working():
    a = pg.kernels.make_kernel_net("siren", 3, 4, hidden=8, omega_0=30.0, rngs=nnx.Rngs(0))
    b = KernelSpec(hidden=8, options={"omega_0": 30.0}).make_net(3, 4, rngs=nnx.Rngs(0))
    assert a.omega_0 == 30.0
    for p, q in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="'nope'"):
        pg.kernels.make_kernel_net("nope", 3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'mlp_relu' has no setting\(s\) \['omega_0'\]"):
        pg.kernels.make_kernel_net("mlp_relu", 3, 4, omega_0=30.0, rngs=nnx.Rngs(0))


def test_separable_flag_and_joint_only_layers():
    conv = _sep("se2", 4)
    assert conv.kernel.render == "separable"
    assert isinstance(conv.kernel_net, pg.kernels.SeparableKernelNet)
    spec = KernelSpec(hidden=8, render="separable")
    same = pg.nn.GroupConv(3, 2, group="se2", num_elements=4, kernel=spec, rngs=nnx.Rngs(1))
    assert same.kernel == conv.kernel
    with pytest.raises(ValueError, match="separable=False contradicts"):
        pg.nn.GroupConv(3, 2, group="se2", num_elements=4, kernel=spec, separable=False,
                        rngs=nnx.Rngs(1))  # fmt: skip
    with pytest.raises(ValueError, match="LiftingConv renders its kernel jointly"):
        pg.nn.LiftingConv(1, 2, group="se2", num_elements=4, kernel=spec, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="PointwiseGroupConv renders its kernel jointly"):
        pg.nn.PointwiseGroupConv(2, 2, group="se2", kernel=spec, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="T2FinalConv renders its kernel jointly"):
        pg.models.T2FinalConv(2, 2, group="se2", kernel_size=3, kernel=spec, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown render 'dense'"):
        pg.nn.render_group_conv("dense")
    assert tuple(pg.nn.GROUP_RENDERERS) == pg.kernels.RENDERS


def test_separable_model_config_and_old_configs(key):
    config = ModelConfig(separable=True, width=2, num_blocks=1, block_width_factors=(1.0, 1),
                         pool_blocks=(1,), kernel_size=3, kernel_hidden=8, num_elements=4,
                         head="t2")  # fmt: skip
    assert config.kernel.render == "separable"
    model = build_model(config, num_classes=2, in_features=1, rngs=nnx.Rngs(0))
    assert model.lift.kernel == config.kernel.replace(render="joint")
    assert model.blocks[0].conv1.kernel == config.kernel
    assert model.blocks[0].shortcut.kernel == config.kernel.replace(hidden=4, render="joint")
    assert model.final_conv.kernel.render == "joint"
    logits = model(jax.random.normal(key, (2, 8, 8, 1)), rngs=nnx.Rngs(sample=0))
    assert logits.shape == (2, 2) and bool(jnp.all(jnp.isfinite(logits)))
    with pytest.raises(ValueError, match="separable must be a bool, got 1"):
        ModelConfig(separable=1)
    with pytest.raises(ValueError, match="beta.*0"):
        ModelConfig(kernel="gabor", mfn_beta=0.0)
    # a config.json written before the separable / MFN keys existed loads and resumes
    train = TrainConfig(dataset="cifar10", model=ModelConfig(width=2, num_elements=4))
    stored = train.to_dict()
    flat = stored["model"].pop("kernel")  # in the flat form, without those keys
    stored["model"] |= dict(kernel=flat["net"], kernel_hidden=32, kernel_layers=3, omega_0=10.0)
    assert TrainConfig.from_dict(stored) == train
    assert config_differences(stored, train) == []
    assert config_differences(stored, train.replace(model=train.model.replace(separable=True))) == [
        "model.kernel.render"
    ]


def test_kernel_memory_estimate_of_separable_models():
    from pgcnn_jax.models import kernel_memory_bytes, rendered_sets

    config = ModelConfig(num_elements=16, width=32, kernel_size=7, sample_per_batch_element=True)
    joint = kernel_memory_bytes(config, in_features=3)
    separable = kernel_memory_bytes(config.replace(separable=True), in_features=3)
    assert 0 < separable < joint / 10
    assert rendered_sets(config.replace(separable=True), 64) == 64  # all B factors at once
