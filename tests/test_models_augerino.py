"""Augerino models: the resampler against exact transforms, mirror copies, averaging over the valid
copies only."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import MODEL_TINY as TINY
from _helpers import MODEL_TINY_GCNN as TINY_GCNN
from _helpers import build as _build
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax import models


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
