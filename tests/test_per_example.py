"""Per-batch-element sampling rendered chunk by chunk (issue 8 item 6): the same numbers as
rendering all B kernels first, without B full kernels in memory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import TINY_W3
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.models import build_model, kernel_norm_penalty

TINY = TINY_W3.replace(sample_per_batch_element=True)
_CONVS = (pg.nn.LiftingConv, pg.nn.GroupConv, pg.nn.PointwiseGroupConv)


def _set_render(model, mode):
    layers = [n for _, n in nnx.iter_graph(model) if isinstance(n, _CONVS)]
    for layer in layers:
        layer.per_example_render = mode
    return len(layers)


def _loss(model, x, labels, key):
    logits = model(x, rngs=nnx.Rngs(sample=key, dropout=key))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return ce + 1e-3 * kernel_norm_penalty(model), logits


@nnx.jit
def _outputs_and_grads(model, x, labels, key):
    grad_fn = nnx.value_and_grad(_loss, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
    return grad_fn(model, x, labels, key)


def test_chunked_equals_batched_rendering(key):
    config = TINY.replace(group="se2", num_elements=4)
    chunked = build_model(config, num_classes=3, in_features=2, rngs=nnx.Rngs(0))
    for _, layer in pg.models.partial_layers(chunked):
        layer.theta[...] = jnp.float32(0.6)
    batched = nnx.clone(chunked)
    assert _set_render(batched, "batched") == 5  # lift, conv1, conv2, shortcut, final
    chunked.train()
    batched.train()
    x = jax.random.normal(jax.random.fold_in(key, 0), (3, 8, 8, 2))
    labels = jnp.array([0, 2, 1])
    k = jax.random.fold_in(key, 1)
    (loss_c, logits_c), grads_c = _outputs_and_grads(chunked, x, labels, k)
    (loss_b, logits_b), grads_b = _outputs_and_grads(batched, x, labels, k)
    np.testing.assert_allclose(logits_c, logits_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_c, loss_b, rtol=1e-6)
    flat_b = nnx.to_flat_state(grads_b)
    flat_c = dict(nnx.to_flat_state(grads_c))
    scale = max(float(jnp.max(jnp.abs(g[...]))) for _, g in flat_b)
    for path, g in flat_b:
        np.testing.assert_allclose(
            flat_c[path][...], g[...], rtol=1e-4, atol=1e-6 * scale, err_msg=str(path)
        )
    norms_c = nnx.to_flat_state(nnx.state(chunked, pg.nn.KernelNorm))
    norms_b = dict(nnx.to_flat_state(nnx.state(batched, pg.nn.KernelNorm)))
    for path, v in norms_c:
        assert float(v[...]) > 0
        np.testing.assert_allclose(v[...], norms_b[path][...], rtol=1e-6, err_msg=str(path))


def test_conv2d_per_example_matches_conv2d(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (5, 6, 6, 4))
    w = jax.random.normal(k2, (5, 3, 3, 4, 2))

    def render(wb):
        return jnp.sin(wb)

    for chunk in (1, 2, 5):
        y, sq = pg.nn.conv2d_per_example(x, render, (w,), "same", chunk=chunk)
        np.testing.assert_allclose(y, pg.nn.conv2d(x, jnp.sin(w), "same"), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sq, jnp.sum(jnp.sin(w) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="chunk must be a positive int, got 0"):
        pg.nn.conv2d_per_example(x, render, (w,), "same", chunk=0)
    with pytest.raises(ValueError, match=r"operand of shape \(4, 3, 3, 4, 2\)"):
        pg.nn.conv2d_per_example(x, render, (w[:4],), "same")


def test_bad_per_example_render(key):
    lift = pg.nn.LiftingConv(
        1, 2, group="se2", num_elements=2, kernel_size=3, sample_per_batch_element=True,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown per_example_render 'all'"):
        lift.per_example_render = "all"  # the layer's SamplingSpec refuses it
    shortcut = pg.nn.PointwiseGroupConv(2, 2, group="se2", rngs=nnx.Rngs(0))
    shortcut.per_example_render = "all"
    f = lift(jnp.ones((2, 5, 5, 1)), rngs=nnx.Rngs(sample=key))
    with pytest.raises(ValueError, match="unknown per_example_render 'all'"):
        shortcut(f, f.elements, f.mask)


def test_rendered_sets():
    from pgcnn_jax.models import rendered_sets

    chunk = pg.nn.per_example_chunk()
    assert chunk == (1 if jax.default_backend() == "cpu" else 8)
    config = TINY.replace(num_elements=8)  # the default N
    assert rendered_sets(config, 64) == chunk
    assert rendered_sets(config.replace(sample_per_batch_element=False), 64) == 1
    assert rendered_sets(config.replace(kernel="mlp_relu"), 64) == 64
