"""``sim2`` partial group convolutions: the learnable scale width, its gradients, and adaptive
execution equal to masked."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import TINY
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.groups import get_group
from pgcnn_jax.kernels import KernelSpec
from pgcnn_jax.models import build_model, kernel_norm_penalty

LOG2 = math.log(2.0)


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
    config = TINY.replace(
        group="sim2",
        group_options={"num_scales": 2},
        num_elements=8,
        width=2,
        kernel_hidden=4,
        block_width_factors=(2.0, 1),
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
