"""The depthwise conv of separable group convs: shifted-tap multiply-adds with a hand-written
VJP (``method="taps"``, the CPU default) against the grouped conv (issue 14 item 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.kernels import KernelSpec, disc_mask
from pgcnn_jax.nn import DEPTHWISE_METHODS, depthwise_conv2d, depthwise_method, disc_taps

TOL = dict(rtol=2e-5, atol=2e-5)


def _loss(method, padding, taps=None):
    def f(x, w):
        y = depthwise_conv2d(x, w, padding, method=method, taps=taps)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.shape[-1], dtype=y.dtype)[None, None, None]), y

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))


@pytest.mark.parametrize(
    "k, per_example, padding", [(3, False, "same"), (5, True, "same"), (5, False, "valid")]
)
def test_taps_equal_the_conv_in_outputs_and_both_gradients(key, k, per_example, padding):
    kx, kw = jax.random.split(key)
    b, g = 3, 5
    x = jax.random.normal(kx, (b, 8, 7, g))
    w = jax.random.normal(kw, (b if per_example else 1, k, k, g))
    (_, y_conv), grads_conv = _loss("conv", padding)(x, w)
    (_, y_taps), grads_taps = _loss("taps", padding)(x, w)
    assert y_taps.shape == y_conv.shape
    np.testing.assert_allclose(y_taps, y_conv, **TOL)
    for a, c in zip(grads_taps, grads_conv, strict=True):
        np.testing.assert_allclose(a, c, **TOL)


def test_disc_taps_skip_only_taps_a_masked_weight_cannot_use(key):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (2, 9, 9, 4))
    w = jax.random.normal(kw, (1, 7, 7, 4))
    assert len(disc_taps(7)) == int(jnp.sum(disc_mask(7))) == 29

    def masked(method, taps):
        def f(x, w):
            y = depthwise_conv2d(x, w * disc_mask(7)[None, :, :, None], "same", method=method,
                                 taps=taps)  # fmt: skip
            return jnp.sum(jnp.cos(y))

        return jax.grad(f, argnums=(0, 1))(x, w)

    for a, c in zip(masked("taps", disc_taps(7)), masked("conv", None), strict=True):
        np.testing.assert_allclose(a, c, **TOL)


def test_separable_layer_is_the_same_with_either_depthwise_method(key, monkeypatch):
    lift = pg.nn.LiftingConv(1, 3, group="se2", num_elements=4, kernel_size=5,
                             kernel=KernelSpec(hidden=8), sampling="deterministic",
                             rngs=nnx.Rngs(0))  # fmt: skip
    spec = KernelSpec(hidden=8, render="separable")
    conv = pg.nn.GroupConv(3, 2, group="se2", num_elements=4, kernel_size=5, partial=True,
                           kernel=spec, rngs=nnx.Rngs(1))  # fmt: skip
    conv.theta[...] = 0.7
    f = lift(jax.random.normal(key, (2, 9, 9, 1)))

    def run(method):
        monkeypatch.setenv("PGCNN_DEPTHWISE", method)

        def loss(conv):
            h = conv(f, rngs=nnx.Rngs(sample=5))
            return jnp.sum(jnp.sin(h.values)), h.values

        (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(conv)
        return y, grads

    (y_conv, g_conv), (y_taps, g_taps) = run("conv"), run("taps")
    np.testing.assert_allclose(y_taps, y_conv, **TOL)
    flat_c, flat_t = jax.tree.leaves(g_conv), jax.tree.leaves(g_taps)
    assert len(flat_c) == len(flat_t) > 3
    for a, c in zip(flat_t, flat_c, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(g_taps["theta"][...])) > 0


def test_method_choice_and_its_errors(monkeypatch):
    monkeypatch.delenv("PGCNN_DEPTHWISE", raising=False)
    assert DEPTHWISE_METHODS == ("conv", "taps")
    assert depthwise_method() == ("taps" if jax.default_backend() == "cpu" else "conv")
    assert depthwise_method("conv") == "conv"
    monkeypatch.setenv("PGCNN_DEPTHWISE", "conv")
    assert depthwise_method() == "conv"
    monkeypatch.setenv("PGCNN_DEPTHWISE", "winograd")
    with pytest.raises(ValueError, match="PGCNN_DEPTHWISE='winograd'"):
        depthwise_method()
    with pytest.raises(ValueError, match="method 'fft'"):
        depthwise_method("fft")
    x, w = jnp.zeros((1, 5, 5, 2)), jnp.zeros((1, 3, 3, 2))
    with pytest.raises(ValueError, match="taps"):
        depthwise_conv2d(x, w, "same", method="taps", taps=((0, 3),))
    with pytest.raises(ValueError, match="depthwise weight of shape"):
        depthwise_conv2d(x, jnp.zeros((1, 3, 3, 3)), "same", method="taps")
