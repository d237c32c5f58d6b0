"""The per-epoch signal-to-noise ratio of the distribution parameters' gradients (issue 14)."""

import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import TINY  # tests/ is on sys.path
from flax import nnx

from pgcnn_jax.models import build_model
from pgcnn_jax.train import MetricSums, distribution_entries, grad_snr_by_layer


def _step(g):
    return {
        "loss_sum": jnp.float32(1.0),
        "correct": jnp.int32(1),
        "count": jnp.int32(2),
        "dist_grad": jnp.asarray(g, jnp.float32),
    }


def test_grad_snr_is_mean_over_std_across_steps_and_survives_a_restart():
    grads = np.array([[1.0, -2.0, 0.0], [3.0, -2.0, 0.0], [2.0, -2.5, 0.0]])
    sums = MetricSums()
    for g in grads[:2]:
        sums.add(_step(g))
    resumed = MetricSums(**sums.to_dict())  # a restart inside the epoch keeps the sums
    resumed.add(_step(grads[2]))
    mean, std = grads.mean(0), grads.std(0)
    snr = resumed.grad_snr()
    np.testing.assert_allclose(snr[:2], np.abs(mean[:2]) / std[:2], rtol=1e-6)
    assert np.isnan(snr[2])  # a zero gradient has no ratio
    np.testing.assert_allclose(resumed.grad_mean(), mean, rtol=1e-6)
    assert resumed.grad_steps == 3
    one = MetricSums()
    one.add(_step(grads[0]))
    assert np.all(np.isnan(one.grad_snr()))  # one step: no spread
    assert MetricSums().grad_snr().size == 0


def test_grad_snr_by_layer_names_each_layers_parameters():
    model = build_model(TINY.replace(group="e2", num_elements=8), num_classes=2,
                        in_features=1, rngs=nnx.Rngs(0))  # fmt: skip
    entries = distribution_entries(model)
    assert [name for _, name, _ in entries].count("theta") == 3
    assert {name for _, name, _ in entries} == {"theta", "mirror"}
    values = np.arange(len(entries), dtype=float)
    per_layer = grad_snr_by_layer(model, values)
    assert len(per_layer) == 3 and all(set(d) == {"theta", "mirror"} for d in per_layer)
    flat = sorted(v for d in per_layer for v in d.values())
    assert flat == list(values)
    assert grad_snr_by_layer(model, np.zeros(0)) == [{}, {}, {}]
    with pytest.raises(ValueError, match="5 gradient statistics"):
        grad_snr_by_layer(model, np.zeros(5))
