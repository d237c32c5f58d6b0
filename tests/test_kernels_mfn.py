"""Tests for the multiplicative filter network kernel nets (REFERENCE 2.5)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pgcnn_jax.kernels._mfn import MFN_KINDS, FourierNet, GaborNet, MAGNet

NETS = {"fourier": FourierNet, "gabor": GaborNet, "magnet": MAGNet}

# Few distinct configurations: eager initialisation compiles once per shape, so sharing them
# keeps the file fast. (d_in, out, hidden, num_layers)
COUNT = (3, 12, 32, 3)
SMALL = COUNT
BIG = (3, 4, 512, 3)


@functools.cache
def _net(kind: str, cfg: tuple[int, int, int, int], seed: int = 0, **kwargs) -> nnx.Module:
    d_in, out, hidden, num_layers = cfg
    return NETS[kind](
        d_in, out, hidden=hidden, num_layers=num_layers, rngs=nnx.Rngs(seed), **kwargs
    )


def _num_params(net: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param)))


def test_kinds():
    assert MFN_KINDS == ("fourier", "gabor", "magnet")


@pytest.mark.parametrize("kind", MFN_KINDS)
@pytest.mark.parametrize("lead", [(), (7,), (2, 5, 4)])
def test_output_shape(kind, lead):
    net = _net(kind, SMALL)
    x = jax.random.uniform(jax.random.key(1), (*lead, 3), minval=-1.0, maxval=1.0)
    y = net(x)
    assert y.shape == (*lead, 12)
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("kind", MFN_KINDS)
def test_pointwise(kind):
    net = _net(kind, SMALL)
    x = jax.random.uniform(jax.random.key(2), (6, 3), minval=-1.0, maxval=1.0)
    y = net(x)
    for i in range(6):
        np.testing.assert_allclose(net(x[i]), y[i], rtol=1e-5, atol=1e-5)


def test_param_counts():
    d_in, out, h, num_layers = 3, 12, 32, 3
    n_filters = num_layers + 1
    linear_filter = d_in * h + h
    hidden = num_layers * (h * h + h)
    output = h * out + out
    fourier = n_filters * linear_filter + hidden + output
    gabor = n_filters * (linear_filter + h + h * d_in)  # + gamma [H] + mu [H, d_in]
    gabor += hidden + output
    magnet = n_filters * (linear_filter + h * d_in + h * d_in)  # + gamma, mu [H, d_in]
    magnet += hidden + output
    assert (fourier, gabor, magnet) == (4076, 4588, 4844)
    assert COUNT == (d_in, out, h, num_layers)
    assert _num_params(_net("fourier", COUNT)) == fourier
    assert _num_params(_net("gabor", COUNT)) == gabor
    assert _num_params(_net("magnet", COUNT)) == magnet


@pytest.mark.parametrize("kind", MFN_KINDS)
def test_structure_and_linear_init(kind):
    d_in, out, h, num_layers = BIG
    net = _net(kind, BIG)
    assert len(net.filters) == num_layers + 1
    assert len(net.linears) == num_layers
    for lin in net.linears:
        w, b = np.asarray(lin.kernel[...]), np.asarray(lin.bias[...])
        assert w.shape == (h, h) and b.shape == (h,)
        bound = math.sqrt(1.0 / h)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
        assert np.abs(b).max() <= 1.0 / math.sqrt(h)
    w, b = np.asarray(net.out.kernel[...]), np.asarray(net.out.bias[...])
    assert w.shape == (h, out) and b.shape == (out,)
    assert np.abs(w).max() <= 1.0 / math.sqrt(h) and np.abs(b).max() <= 1.0 / math.sqrt(h)


@pytest.mark.parametrize("kind", MFN_KINDS)
def test_filter_init(kind):
    d_in, _, h, num_layers = BIG
    net = _net(kind, BIG)
    bound = 256.0 / math.sqrt(num_layers + 1) / math.sqrt(d_in)
    for filt in net.filters:
        w = np.asarray(filt.linear.kernel[...])
        b = np.asarray(filt.linear.bias[...])
        assert w.shape == (d_in, h)
        assert np.all(np.abs(b) <= math.pi) and np.abs(b).max() > 0.95 * math.pi
        if kind == "fourier":
            base = w
        else:
            gamma = np.asarray(filt.gamma[...])
            mu = np.asarray(filt.mu[...])
            assert mu.shape == (h, d_in)
            assert np.all(np.abs(mu) <= 1.0) and np.abs(mu).max() > 0.95
            assert np.all(gamma > 0)
            if kind == "gabor":
                assert gamma.shape == (h,)
                base = w / gamma[None, :]
            else:
                assert gamma.shape == (h, d_in)
                base = w / gamma.T
        assert np.abs(base).max() <= bound * (1 + 1e-5)
        assert np.abs(base).max() > 0.95 * bound


def test_gabor_gamma_shape_parameter():
    num_layers = BIG[3]
    net = _net("gabor", BIG)
    gammas = np.concatenate([np.asarray(f.gamma[...]) for f in net.filters])
    # Gamma(shape a, rate 1): mean a, variance a; same shape 6/(L+1) for every filter.
    a = 6.0 / (num_layers + 1)
    assert abs(gammas.mean() - a) < 0.1 * a
    assert abs(gammas.var() - a) < 0.2 * a


def test_magnet_gamma_shape_per_filter():
    net = _net("magnet", BIG)
    means = [float(np.asarray(f.gamma[...]).mean()) for f in net.filters]
    for idx, m in enumerate(means):
        a = 6.0 / (idx + 1)  # 6, 3, 2, 1.5
        assert abs(m - a) < 0.1 * a, (idx, m, a)


def test_magnet_gamma_rate():
    net = _net("magnet", (3, 4, 512, 1), beta=2.0)
    m = float(np.asarray(net.filters[0].gamma[...]).mean())
    assert abs(m - 3.0) < 0.3


@pytest.mark.parametrize("kind", MFN_KINDS)
def test_gradients(kind):
    net = _net(kind, SMALL)
    x = jax.random.uniform(jax.random.key(9), (32, 3), minval=-1.0, maxval=1.0)

    def loss_x(x):
        return jnp.sum(net(x) ** 2)

    gx = jax.grad(loss_x)(x)
    assert bool(jnp.all(jnp.isfinite(gx))) and float(jnp.abs(gx).max()) > 0

    def loss_p(net):
        return jnp.sum(net(x) ** 2)

    grads = nnx.grad(loss_p)(net)
    leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert leaves
    for g in leaves:
        assert bool(jnp.all(jnp.isfinite(g)))
    assert all(float(jnp.abs(g).max()) > 0 for g in leaves)
    if kind != "fourier":
        for i in range(len(net.filters)):
            assert float(jnp.abs(grads["filters"][i]["gamma"][...]).max()) > 0
            assert float(jnp.abs(grads["filters"][i]["mu"][...]).max()) > 0


@pytest.mark.parametrize("kind", MFN_KINDS)
def test_jit(kind):
    net = _net(kind, SMALL)
    x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    np.testing.assert_allclose(nnx.jit(lambda n, x: n(x))(net, x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", MFN_KINDS)
@pytest.mark.parametrize(
    "kwargs, bad",
    [
        (dict(num_layers=0), "num_layers"),
        (dict(num_layers=-1), "num_layers"),
        (dict(hidden=0), "hidden"),
    ],
)
def test_bad_arguments(kind, kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        NETS[kind](3, 4, rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("kind", ["gabor", "magnet"])
def test_bad_gamma_arguments(kind):
    with pytest.raises(ValueError, match="alpha"):
        NETS[kind](3, 4, alpha=0.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="beta"):
        NETS[kind](3, 4, beta=-1.0, rngs=nnx.Rngs(0))


def test_min_layers():
    for kind in MFN_KINDS:
        net = _net(kind, (3, 12, 32, 1))
        assert len(net.filters) == 2 and len(net.linears) == 1
        assert net(jnp.zeros((3,))).shape == (12,)
