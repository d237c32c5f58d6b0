"""``sim2`` models: config options round trip, a partial CKResNet trains end to end, the Haar
measure ablation."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import TINY
from flax import nnx

import pgcnn_jax as pg
from experiments import figures
from pgcnn_jax.analysis import learned_subsets
from pgcnn_jax.groups import Sim2, get_group
from pgcnn_jax.models import ModelConfig
from pgcnn_jax.train import (
    TrainConfig,
    config_differences,
    create_model,
    create_optimizer,
    layer_summary,
    train_step,
)


# ----------------------------------------------------------------------------- models
def test_model_config_group_options_round_trip():
    options = {"scale_base": 2, "num_scales": 3}
    config = ModelConfig(group="sim2", group_options=options, num_elements=6)
    assert config.group_options == (("num_scales", 3), ("scale_base", 2))
    assert config.make_group() == Sim2(3, 2.0) and hash(config) == hash(config.replace())
    train = TrainConfig(dataset="mnist6_180", model=config)
    stored = json.loads(json.dumps(train.to_dict()))
    assert TrainConfig.from_dict(stored) == train
    assert config_differences(stored, train) == []
    # config.json files written before group_options existed load with the default settings
    old = json.loads(json.dumps(TrainConfig(dataset="mnist6_180").to_dict()))
    del old["model"]["group_options"]
    assert TrainConfig.from_dict(old).model.group_options == ()
    assert config_differences(old, TrainConfig(dataset="mnist6_180")) == []
    with pytest.raises(ValueError, match="divisible by 3"):
        ModelConfig(group="sim2", group_options=options, num_elements=8)
    with pytest.raises(ValueError, match="bad settings"):
        ModelConfig(group="se2", group_options={"num_scales": 2})
    with pytest.raises(ValueError, match="must be a number or a string"):
        ModelConfig(group="sim2", group_options={"num_scales": [2]})


def test_ckresnet_sim2_partial_trains(key):
    model_config = TINY.replace(
        group="sim2", group_options=(("num_scales", 2), ("scale_base", 2.0))
    )
    config = TrainConfig(
        dataset="mnist6_180",
        model=model_config,
        batch_size=4,
        lr=1e-2,
        lr_probs=0.1,
        scheduler="constant",
    )
    model = create_model(config)
    want = model_config.make_group()
    groups = [m.group for _, m in nnx.iter_modules(model) if hasattr(m, "group")]
    assert len(groups) == 5 and all(g == want for g in groups)  # lift, 2 convs, shortcut, final
    optimizer = create_optimizer(config, model)
    before = {n: (float(c.theta[...]), float(c.scale[...])) for n, c in pg.nn.partial_layers(model)}
    k1, k2 = jax.random.split(key)
    batch = {"image": jax.random.normal(k1, (4, 28, 28, 1)), "label": jnp.array([0, 1, 1, 0])}
    out = train_step(model, optimizer, batch, k2)
    assert int(out["count"]) == 4 and math.isfinite(float(out["loss_sum"]))
    after = {n: (float(c.theta[...]), float(c.scale[...])) for n, c in pg.nn.partial_layers(model)}
    assert all(after[n][1] != before[n][1] for n in before)  # the scale widths learn
    summary = layer_summary(model)
    assert [a["scale"]["of"] for a in summary["axes"]] == [2, 2, 2]
    assert summary["elements"] == [
        a["rotation"]["kept"] * a["scale"]["kept"] for a in summary["axes"]
    ]
    # the subsets analysis and figure report both axes (N' = R' S')
    for _, layer in pg.nn.partial_layers(model):
        layer.scale[...] = jnp.float32(0.4)  # 1 of 2 scales
    subsets = learned_subsets(model, jnp.zeros((1, 28, 28, 1)))
    partial = [s for s in subsets if s.partial]
    assert [s.axes["scale"]["kept"] for s in partial] == [1, 1, 1]
    assert subsets[0].axes["scale"] == {"kept": 2, "of": 2, "width": 1.0}  # the full lift
    fig, record = figures.figure_subsets(["runs/x"], [model], [config], seed=0)
    layers = record["runs"][0]["layers"]
    assert [layer["n_prime"] for layer in layers] == [
        s.axes["rotation"]["kept"] * s.axes["scale"]["kept"] for s in subsets
    ]
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "kept scale (fraction)"


def test_haar_measure_can_be_left_out_for_an_ablation():
    elements = jnp.array([[[0.0, 0.0], [1.0, 0.5 * np.log(2.0)]]])
    with_measure = get_group("sim2").kernel_measure(elements)
    np.testing.assert_allclose(with_measure, [[1.0, 0.5]], rtol=1e-6)  # e^{-2 l}
    without = get_group("sim2", haar_measure=False)
    np.testing.assert_array_equal(without.kernel_measure(elements), [[1.0, 1.0]])
    assert without != get_group("sim2") and hash(without) != hash(get_group("sim2"))
    with pytest.raises(ValueError, match="haar_measure must be a bool"):
        get_group("sim2", haar_measure="no")
