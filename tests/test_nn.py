"""Layers: kernel taps, masked execution, norms, pooling, argument checks, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.nn import GroupFeatures


@pytest.mark.parametrize("k, taps", [(7, 29), (3, 5)])
@pytest.mark.parametrize("group, n", [("se2", 8), ("e2", 8)])
def test_disc_mask_taps(key, k, taps, group, n):
    g = pg.groups.get_group(group)
    els, mask = pg.groups.sample_elements(g, key, n, sampling="random")
    conv = pg.nn.GroupConv(2, 3, group=g, num_elements=n, kernel_size=k, rngs=nnx.Rngs(0))
    w = pg.nn.group_kernel(conv.kernel_net, g, els, els, mask, mask, k, 2, 3)
    assert w.shape == (1, k, k, n * 2, n * 3)
    nonzero = np.asarray(jnp.any(w[0] != 0, axis=(2, 3)))
    assert nonzero.sum() == taps
    # Lifting: a constant kernel net shows the mask itself (the SIREN is exactly 0 at the
    # centre tap at init, its biases being zero), for every sampled angle.
    ones = lambda p: jnp.ones((*p.shape[:-1], 6))  # noqa: E731
    wl = pg.nn.lifting_kernel(ones, g, els, k, 2, 3)
    for e in range(n):
        assert int(jnp.sum(jnp.any(wl[0, :, :, :, e * 3 : (e + 1) * 3] != 0, axis=(2, 3)))) == taps
    lift = pg.nn.LiftingConv(2, 3, group=g, num_elements=n, kernel_size=k, rngs=nnx.Rngs(0))
    wl = pg.nn.lifting_kernel(lift.kernel_net, g, els, k, 2, 3)
    outside = np.asarray(pg.kernels.disc_mask(k)) == 0
    assert np.all(np.asarray(wl[0])[outside] == 0)


def _partial_stack(group="se2", n=8):
    rngs = nnx.Rngs(0)
    lift = pg.nn.LiftingConv(3, 4, group=group, num_elements=n, kernel_size=5, rngs=rngs)
    c1 = pg.nn.GroupConv(4, 4, group=group, num_elements=n, kernel_size=5, partial=True, rngs=rngs)
    c2 = pg.nn.GroupConv(4, 5, group=group, num_elements=n, kernel_size=5, partial=True, rngs=rngs)
    return lift, c1, c2


def test_masked_slots_stay_zero_and_match_truncated(key):
    lift, c1, c2 = _partial_stack()
    c1.theta[...] = 0.5  # N' = 4
    c2.theta[...] = 0.3  # N' = 3
    x = jax.random.normal(key, (2, 11, 11, 3))
    h0 = lift(x, rngs=nnx.Rngs(sample=1))
    h1 = c1(h0, rngs=nnx.Rngs(sample=2))
    h1 = pg.nn.layer_norm_nhw(h1.replace_values(jax.nn.relu(h1.values)))
    h2 = c2(h1, rngs=nnx.Rngs(sample=3))
    np.testing.assert_array_equal(h1.mask, [[1, 1, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(h2.mask, [[1, 1, 1, 0, 0, 0, 0, 0]])
    assert np.all(np.asarray(h1.values[..., 4:, :]) == 0)
    assert np.all(np.asarray(h2.values[..., 3:, :]) == 0)
    # Reference: the same layer evaluated on only the N' valid elements.
    g = c2.group
    g_in, g_out = h1.elements[:, :4], h2.elements[:, :3]
    ones_in, ones_out = jnp.ones((1, 4)), jnp.ones((1, 3))
    # norm statistics over the valid slots only
    h1_t = pg.nn.layer_norm_nhw(
        GroupFeatures(
            jax.nn.relu(c1(h0, rngs=nnx.Rngs(sample=2)).values[..., :4, :]), g_in, ones_in
        )
    )
    np.testing.assert_allclose(h1_t.values, h1.values[..., :4, :], atol=1e-5)
    w = pg.nn.group_kernel(c2.kernel_net, g, g_out, g_in, ones_out, ones_in, 5, 4, 5)
    y = pg.nn.conv2d(h1_t.values.reshape(2, 11, 11, -1), w, "same").reshape(2, 11, 11, 3, 5)
    y = y + c2.bias[...].reshape(1, 1, 1, 1, -1)
    np.testing.assert_allclose(h2.values[..., :3, :], y, atol=1e-4, rtol=1e-4)


def test_pools_and_norms_honour_mask(key):
    v = jax.random.normal(key, (2, 4, 4, 6, 3))
    mask = jnp.array([[1.0, 1, 1, 0, 0, 0]])
    h = GroupFeatures(v * mask[:, None, None, :, None], jnp.zeros((1, 6, 1)), mask)
    t = GroupFeatures(v[..., :3, :], jnp.zeros((1, 3, 1)), jnp.ones((1, 3)))
    neg = h.replace_values(h.values - 100.0 * mask[:, None, None, :, None])
    assert float(pg.nn.group_max_pool(neg).max()) < -90  # padding zeros never win the max
    np.testing.assert_allclose(pg.nn.group_max_pool(h), pg.nn.group_max_pool(t), atol=1e-6)
    np.testing.assert_allclose(pg.nn.group_mean_pool(h), pg.nn.group_mean_pool(t), atol=1e-6)
    for norm in (pg.nn.GroupBatchNorm(3), pg.nn.GroupLayerNorm(3)):
        a, b = norm(h).values, norm(t).values
        np.testing.assert_allclose(a[..., :3, :], b, atol=1e-5)
        assert np.all(np.asarray(a[..., 3:, :]) == 0)
    p = pg.nn.spatial_max_pool(GroupFeatures(jnp.ones((1, 7, 7, 2, 1)), h.elements, h.mask))
    assert p.values.shape == (1, 3, 3, 2, 1)


def test_batchnorm_running_stats_and_eval(key):
    bn = pg.nn.GroupBatchNorm(3)
    h = GroupFeatures(
        2.0 + jax.random.normal(key, (4, 5, 5, 4, 3)), jnp.zeros((1, 4, 1)), jnp.ones((1, 4))
    )
    bn(h)
    np.testing.assert_allclose(bn.mean[...], 0.1 * h.values.mean(axis=(0, 1, 2, 3)), rtol=1e-5)
    bn.eval()
    assert bn.use_running_average
    out = bn(h).values
    assert float(out.mean()) > 1.0  # running statistics, not the batch's


def test_e2_partial_layer(key):
    lift, c1, _ = _partial_stack("e2", 8)
    assert isinstance(c1.mirror, pg.nn.DistributionParam)
    assert isinstance(c1.theta, pg.nn.DistributionParam)
    c1.mirror[...] = -20.0  # mirror never fires
    c1.theta[...] = 0.5  # R' = 2
    h = c1(lift(jnp.ones((1, 9, 9, 3)), rngs=nnx.Rngs(sample=0)), rngs=nnx.Rngs(sample=1))
    np.testing.assert_array_equal(h.mask, [[1, 1, 0, 0, 0, 0, 0, 0]])
    # The temperature counts optimiser steps (advanced by the train steps), not forwards.
    assert int(c1.gumbel_step[...]) == 0


def test_deterministic_partial_has_keep_params():
    conv = pg.nn.GroupConv(
        2,
        2,
        group="se2",
        num_elements=8,
        sampling="deterministic",
        partial=True,
        rngs=nnx.Rngs(0),
    )
    assert conv.keep.shape == (7,) and conv.distribution_names == ("keep",)
    conv = pg.nn.GroupConv(
        2,
        2,
        group="e2",
        num_elements=8,
        sampling="deterministic",
        partial=True,
        rngs=nnx.Rngs(0),
    )
    assert conv.keep.shape == (3,) and conv.mirror.shape == ()
    full = pg.nn.GroupConv(2, 2, group="se2", num_elements=8, rngs=nnx.Rngs(0))
    assert not nnx.state(full, pg.nn.DistributionParam)


def test_sample_per_batch_element(key):
    lift = pg.nn.LiftingConv(
        1,
        2,
        group="se2",
        num_elements=4,
        kernel_size=5,
        sample_per_batch_element=True,
        rngs=nnx.Rngs(0),
    )
    conv = pg.nn.GroupConv(
        2,
        2,
        group="se2",
        num_elements=4,
        kernel_size=5,
        partial=True,
        sample_per_batch_element=True,
        rngs=nnx.Rngs(1),
    )
    x = jax.random.normal(key, (3, 9, 9, 1))
    h = conv(lift(x, rngs=nnx.Rngs(sample=0)), rngs=nnx.Rngs(sample=1))
    assert h.elements.shape == (3, 4, 1) and h.values.shape == (3, 9, 9, 4, 2)
    assert not np.allclose(h.elements[0], h.elements[1])
    # Row b of the batch equals a single-example pass with row b's elements.
    single = pg.nn.group_kernel(
        conv.kernel_net,
        conv.group,
        h.elements[1:2],
        lift(x, rngs=nnx.Rngs(sample=0)).elements[1:2],
        h.mask[1:2],
        jnp.ones((1, 4)),
        5,
        2,
        2,
    )
    f1 = lift(x, rngs=nnx.Rngs(sample=0)).values[1:2]
    y = pg.nn.conv2d(f1.reshape(1, 9, 9, -1), single, "same").reshape(1, 9, 9, 4, 2)
    np.testing.assert_allclose(h.values[1:2], y + conv.bias[...].reshape(1, 1, 1, 1, -1), atol=1e-4)


def test_per_sample_conv_paths_agree(key):
    kx, kw = jax.random.split(key)
    x, w = jax.random.normal(kx, (3, 9, 9, 4)), jax.random.normal(kw, (3, 3, 3, 4, 5))
    a = pg.nn.conv2d(x, w, "same", per_sample="map")
    b = pg.nn.conv2d(x, w, "same", per_sample="vmap")
    c = jnp.concatenate([pg.nn.conv2d(x[i : i + 1], w[i : i + 1], "same") for i in range(3)])
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, c, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="loop"):
        pg.nn.conv2d(x, w, "same", per_sample="loop")


def test_kernel_norm_is_recorded():
    lift = pg.nn.LiftingConv(1, 2, group="se2", num_elements=4, kernel_size=5, rngs=nnx.Rngs(0))
    lift.bias[...] = jnp.ones((2,))
    lift(jnp.ones((1, 7, 7, 1)), rngs=nnx.Rngs(sample=0))
    lift(jnp.ones((1, 7, 7, 1)), rngs=nnx.Rngs(sample=1))
    (value,) = jax.tree.leaves(nnx.state(lift, pg.nn.KernelNorm))
    assert value.shape == () and float(value) > np.sqrt(2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(group="so3"), "so3"),
        (dict(num_elements=0), "0"),
        (dict(kernel_size=4), "4"),
        (dict(sampling="sobol"), "sobol"),
        (dict(padding="circular"), "circular"),
        (dict(group="t2", num_elements=1, partial=True), "t2"),
        (dict(sampling="deterministic", sample_per_batch_element=True), "random"),
    ],
)
def test_bad_layer_arguments(kwargs, match):
    args = dict(group="se2", num_elements=4, kernel_size=3, rngs=nnx.Rngs(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        pg.nn.GroupConv(2, 2, **args)


def test_bad_inputs():
    lift = pg.nn.LiftingConv(3, 2, group="se2", num_elements=4, kernel_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(2, 9, 9\)"):
        lift(jnp.ones((2, 9, 9)), rngs=nnx.Rngs(sample=0))
    with pytest.raises(ValueError, match=r"\(2, 9, 9, 1\)"):
        lift(jnp.ones((2, 9, 9, 1)), rngs=nnx.Rngs(sample=0))
    with pytest.raises(ValueError, match="rngs"):
        lift(jnp.ones((2, 9, 9, 3)))
    conv = pg.nn.GroupConv(5, 2, group="se2", num_elements=4, kernel_size=3, rngs=nnx.Rngs(0))
    h = lift(jnp.ones((2, 9, 9, 3)), rngs=nnx.Rngs(sample=0))
    with pytest.raises(ValueError, match=r"\(2, 9, 9, 4, 2\)"):
        conv(h, rngs=nnx.Rngs(sample=0))


class _Tiny(nnx.Module):
    def __init__(self, rngs):
        kw = dict(group="se2", num_elements=4, kernel_size=5, kernel=pg.KernelSpec(hidden=8))
        self.lift = pg.nn.LiftingConv(3, 4, rngs=rngs, **kw)
        self.c1 = pg.nn.GroupConv(4, 4, partial=True, rngs=rngs, **kw)
        self.c2 = pg.nn.GroupConv(4, 4, partial=True, rngs=rngs, **kw)

    def __call__(self, x, rngs):
        h = self.lift(x, rngs=rngs)
        h = self.c1(h.replace_values(jax.nn.relu(h.values)), rngs=rngs)
        h = self.c2(h.replace_values(jax.nn.relu(h.values)), rngs=rngs)
        return pg.nn.group_max_pool(h).mean(axis=(1, 2))


def test_jit_forward_backward_does_not_retrace():
    model = _Tiny(nnx.Rngs(0))
    traces = []

    @nnx.jit
    def step(model, x, key):
        traces.append(1)

        def loss_fn(model):
            return jnp.mean(jnp.square(model(x, nnx.Rngs(sample=key))))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        return loss, grads

    for i in range(3):
        x = jax.random.normal(jax.random.key(i), (8, 32, 32, 3))
        loss, grads = step(model, x, jax.random.key(100 + i))
        assert np.isfinite(float(loss))
    assert len(traces) == 1
    theta_grad = grads["c1"]["theta"][...]
    assert np.isfinite(float(theta_grad)) and float(theta_grad) != 0.0


def test_sampling_spec_and_its_keywords(key):
    spec = pg.nn.SamplingSpec("random", partial=True, per_example=True)
    kw = dict(group="se2", num_elements=4, kernel_size=3)
    by_spec = pg.nn.GroupConv(2, 3, sampling=spec, rngs=nnx.Rngs(0), **kw)
    by_keywords = pg.nn.GroupConv(
        2, 3, sampling="random", partial=True, sample_per_batch_element=True, rngs=nnx.Rngs(0),
        **kw,
    )  # fmt: skip
    kw["rngs"] = nnx.Rngs(0)
    assert by_spec.sampling == by_keywords.sampling == spec and by_spec.partial
    assert nnx.graphdef(by_spec) == nnx.graphdef(by_keywords)
    x = GroupFeatures(
        jnp.ones((2, 5, 5, 4, 2)),
        *pg.groups.get_group("se2").sample(None, 4, sampling="deterministic"),
    )
    np.testing.assert_array_equal(
        by_spec(x, rngs=nnx.Rngs(sample=key)).values,
        by_keywords(x, rngs=nnx.Rngs(sample=key)).values,
    )
    # the horizon is traced state: specs differing only there are equal (one compiled step)
    assert spec.replace(gumbel_horizon=7) == spec and hash(spec.replace(gumbel_horizon=7)) == hash(
        spec
    )
    with pytest.raises(TypeError, match="sample_per_batch"):
        pg.nn.GroupConv(2, 3, sample_per_batch=True, **kw)
    with pytest.raises(ValueError, match="requires sampling='random'"):
        pg.nn.SamplingSpec("deterministic", per_example=True)
    with pytest.raises(ValueError, match="partial=True is not allowed"):
        pg.nn.LiftingConv(1, 2, sampling=spec, **kw)
    with pytest.raises(ValueError, match="gumbel_horizon must be >= 1"):
        pg.nn.SamplingSpec(gumbel_horizon=0)
    with pytest.raises(ValueError, match="sampling must be a SamplingSpec"):
        pg.nn.GroupConv(2, 3, sampling=3, **kw)


def test_distribution_parameters_come_from_the_group():
    kw = dict(num_elements=4, kernel_size=3, sampling="random", partial=True, rngs=nnx.Rngs(0))
    se2 = pg.nn.GroupConv(2, 2, group="se2", **kw)
    e2 = pg.nn.GroupConv(2, 2, group="e2", **kw)
    assert se2.distribution_names == ("theta",) and not hasattr(se2, "mirror")
    assert e2.distribution_names == ("theta", "mirror")
    assert list(e2.distribution()) == list(
        pg.groups.get_group("e2").distribution(4, "random").names
    )
    paths = {
        "/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(e2, pg.nn.DistributionParam))
    }
    assert paths == {"theta", "mirror"}  # checkpoint paths: the parameter names, as before
    full = pg.nn.GroupConv(2, 2, group="e2", num_elements=4, rngs=nnx.Rngs(0))
    assert full.distribution() == {} and not full.partial
    spec = pg.groups.DistributionSpec("theta")
    with pytest.raises(ValueError, match="unique"):
        pg.groups.Distribution((spec, spec))
    t2 = pg.groups.get_group("t2").implied_settings()
    assert t2.as_dict() == dict(
        num_elements=1, sampling="deterministic", partial=False, sample_per_layer=False
    )
    assert pg.groups.get_group("se2").implied_settings().as_dict() == {}
