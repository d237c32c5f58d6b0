"""pgcnn_jax.train: config, schedules, parameter groups, jit steps, the resumable loop."""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
import pytest
from _helpers import TINY, read_metrics, tiny_config, write_mnist_npz
from flax import nnx

from pgcnn_jax.models import AugmentationParam, ModelConfig, build_model, kernel_norm_penalty
from pgcnn_jax.nn import DistributionParam, LiftingConv
from pgcnn_jax.train import (
    MAIN_LABEL,
    PROBS_LABEL,
    TrainConfig,
    config_differences,
    create_model,
    create_optimizer,
    learning_rate_schedule,
    param_labels,
    schedule_for,
    trace_counts,
    train_and_evaluate,
    train_step,
)


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    return write_mnist_npz(tmp_path_factory.mktemp("data") / "mnist.npz")


# ----------------------------------------------------------------------------- config


def test_config_round_trip_through_json():
    config = TrainConfig(dataset="cifar10", model=ModelConfig(group="e2"), lr_probs=1e-4)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config_differences(config.to_dict(), config) == []
    changed = config.replace(lr=0.5, max_steps=3, model=config.model.replace(width=8))
    # max_steps only says where a run stops: not a difference that blocks resuming.
    assert config_differences(config.to_dict(), changed) == ["lr", "model.width"]


def test_config_sets_the_gumbel_horizon():
    # REFERENCE 5.3: T_gumbel = epochs * ceil(nominal size / batch), recorded in the model
    # config too (config.json).
    for config, horizon in [
        (TrainConfig(dataset="cifar10"), 300 * 704),
        (TrainConfig(dataset="rotmnist", epochs=205, batch_size=128), 16195),
        (TrainConfig(dataset="mnist6_180"), 55500),
    ]:
        assert config.gumbel_horizon == config.model.gumbel_horizon == horizon


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dataset="mnist"), "Unknown dataset"),
        (dict(epochs=0), "epochs"),
        (dict(batch_size=2.0), "batch_size"),
        (dict(lr=-1.0), "lr"),
        (dict(scheduler="step"), "scheduler"),
        (dict(max_steps=0), "max_steps"),
        (dict(data="mnist.npz"), "npz:PATH"),
        (dict(augment=True), "augment"),
        (dict(rot_interval=10.0, dataset="cifar10"), "rot_interval"),
        (dict(monotonic=1e-3, model=ModelConfig(model="gcnn")), "monotonic"),
        (dict(model={"width": 3}), "ModelConfig"),
    ],
)
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**({"dataset": "mnist6_180"} | kw))


def test_from_dict_rejects_unknown_keys():
    d = TrainConfig(dataset="cifar10").to_dict()
    with pytest.raises(ValueError, match="typo"):
        TrainConfig.from_dict(d | {"typo": 1})
    d["model"]["typo2"] = 1
    with pytest.raises(ValueError, match="typo2"):
        TrainConfig.from_dict(d)


# ----------------------------------------------------------------------------- schedule


def test_schedule_warmup_peak_and_cosine_end():
    sched = learning_rate_schedule(1e-3, warmup_steps=100, decay_steps=1000, end_value=1e-6)
    values = {s: float(sched(s)) for s in (0, 50, 100, 600, 1100, 5000)}
    assert values[0] == 0.0
    assert values[50] == pytest.approx(5e-4)
    assert values[100] == pytest.approx(1e-3)
    assert values[600] == pytest.approx((1e-3 + 1e-6) / 2)
    assert values[1100] == pytest.approx(1e-6)
    assert values[5000] == pytest.approx(1e-6)
    assert float(learning_rate_schedule(0.1, scheduler="constant")(12345)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="scheduler"):
        learning_rate_schedule(0.1, scheduler="linear")


def test_schedule_for_uses_nominal_iterations():
    # REFERENCE 5.3: CKResNet CIFAR bs 64: I = 704, W = 3520, T = 207680.
    config = TrainConfig(dataset="cifar10", lr=1e-3, lr_probs=1e-4)
    lr, lr_probs = schedule_for(config, config.lr), schedule_for(config, config.lr_probs_or_lr)
    assert float(lr(0)) == 0.0
    assert float(lr(3520)) == pytest.approx(1e-3)
    assert float(lr_probs(3520)) == pytest.approx(1e-4)
    assert float(lr(3520 + 207680)) == pytest.approx(1e-6)
    assert float(lr(1760)) == pytest.approx(5e-4)
    assert TrainConfig(dataset="cifar10").lr_probs_or_lr == 1e-3  # lr_probs 0 -> lr


# ----------------------------------------------------------------------------- parameter groups


def test_param_labels_split_distribution_params_only():
    model = create_model(TrainConfig(dataset="mnist6_180", model=TINY))
    labels = jax.tree.leaves(param_labels(model))
    params = jax.tree.leaves(
        nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    assert len(labels) == len(params)
    for label, param in zip(labels, params, strict=True):
        expected = PROBS_LABEL if isinstance(param, DistributionParam) else MAIN_LABEL
        assert label == expected
    assert labels.count(PROBS_LABEL) == 3  # theta of block1.conv1, block1.conv2, final conv


def test_augerino_parameters_use_the_main_learning_rate():
    config = TINY.replace(model="augerino_ckresnet", partial=False, group="e2")
    model = build_model(config, num_classes=2, in_features=1, rngs=nnx.Rngs(0))
    aug = nnx.state(model, AugmentationParam)
    assert jax.tree.leaves(aug), "an Augerino model owns augmentation parameters"
    assert set(jax.tree.leaves(param_labels(model))) == {MAIN_LABEL}


def _batch(key, n=4):
    k1, k2 = jax.random.split(key)
    return {
        "image": jax.random.normal(k1, (n, 28, 28, 1)),
        "label": jax.random.randint(k2, (n,), 0, 2),
    }


def _params(model):
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.tree.map(np.array, pure)


def test_lr_probs_partition_and_no_retrace(key):
    # lr = 0 and lr_probs > 0 (constant schedule): only distribution parameters move.
    config = tiny_config(None, lr=0.0, lr_probs=0.1, scheduler="constant")
    model = create_model(config)
    optimizer = create_optimizer(config, model)
    before = _params(model)
    keys = jax.random.split(key, 4)
    train_step(model, optimizer, _batch(keys[0]), keys[0])
    traces = trace_counts()["train_step"]
    for k in keys[1:]:  # new data and keys of the same shapes: no retrace
        out = train_step(model, optimizer, _batch(k), k)
    assert trace_counts()["train_step"] == traces
    assert int(out["count"]) == 4 and math.isfinite(float(out["loss_sum"]))
    after = _params(model)
    paths = jax.tree_util.tree_flatten_with_path(before)[0]
    changed = {
        jax.tree_util.keystr(p)
        for (p, a), b in zip(paths, jax.tree.leaves(after), strict=True)
        if not np.array_equal(a, b)
    }
    # theta of block1.conv1, block1.conv2 and the final conv; nothing else.
    assert len(changed) == 3 and all(p.endswith("['theta']") for p in changed), changed
    assert int(optimizer.step[...]) == 4


def test_configs_differing_only_in_epochs_share_the_train_step(key):
    # The Gumbel horizon (epochs * steps per epoch) is traced state, and a constant schedule
    # does not depend on epochs: the step compiled for one config serves the other.
    batch = _batch(key)
    retraces = []
    for epochs in (2, 9):
        config = tiny_config(None, lr=0.0, lr_probs=0.1, scheduler="constant", epochs=epochs)
        model = create_model(config)
        optimizer = create_optimizer(config, model)
        before = trace_counts().get("train_step", 0)
        train_step(model, optimizer, batch, key)
        retraces.append(trace_counts()["train_step"] - before)
    assert retraces[1] == 0, "a config differing only in epochs retraced the train step"


def test_kernel_norm_penalty_keeps_gradients_finite(key):
    """weight_decay > 0 differentiates ||K|| + ||b|| at b = 0 (biases start at zero): the
    gradient must be finite (0 for b, as torch.norm's), or training turns to NaN."""
    lift = LiftingConv(1, 2, group="se2", num_elements=4, kernel_size=3, rngs=nnx.Rngs(0))
    x = _batch(key)["image"]

    def penalty(layer):
        layer(x, rngs=nnx.Rngs(sample=key))
        return kernel_norm_penalty(layer)

    grads = nnx.grad(penalty)(lift)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


# ----------------------------------------------------------------------------- loop


RESULT_KEYS = {
    "test_accuracy",
    "test_accuracies",
    "test_examples",
    "eval_samples",
    "test_loss",
    "best_val_accuracy",
    "best_val_loss",
    "best_epoch",
    "epochs",
    "steps",
    "stop_reason",
    "num_params",
    "layers",
    "theta",
    "mirror_prob",
    "elements",
    "axes",
    "augmentation",
    "config",
    "device",
    "num_devices",
    "seconds",
    "session_start_step",
    "session_seconds",
    "versions",
    "date",
}
METRIC_KEYS = {
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_accuracies",
    "best_val_accuracy",
    "best_epoch",
    "lr",
    "lr_probs",
    "theta",
    "mirror_prob",
    "elements",
    "axes",
    "augmentation",
    "grad_snr",
    "grad_mean",
    "seconds",
}
# Numbers that must agree between an uninterrupted and a resumed run (the epoch's gradient
# sums travel in the checkpoint, so grad_mean too).
EXACT_METRICS = (
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "theta",
    "grad_mean",
)


def test_train_and_evaluate_resumes_exactly(mnist_data, tmp_path):
    config = tiny_config(mnist_data)
    traces = trace_counts()
    full = train_and_evaluate(config, tmp_path / "full", progress=False)
    after_full = trace_counts()
    for name in ("train_step", "eval_state"):  # one trace for all steps and splits
        assert after_full[name] - traces.get(name, 0) <= 1, name
    assert set(full) == RESULT_KEYS
    assert full["stop_reason"] == "completed" and full["epochs"] == 2
    assert full["steps"] == 2 * 4  # 16 training images, batch 4
    assert len(full["theta"]) == len(full["elements"]) == 3
    assert full["mirror_prob"] == [None] * 3
    assert TrainConfig.from_dict(full["config"]) == config
    lines = read_metrics(tmp_path / "full")
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all(set(r) == METRIC_KEYS for r in lines)
    assert all(1 <= n <= 4 for r in lines for n in r["elements"])
    ckpt = tmp_path / "full" / "checkpoints"
    assert sorted(os.listdir(ckpt / "latest")) == ["6", "8"]  # two kept (a spare if corrupt)
    assert str(full["best_epoch"]) in os.listdir(ckpt / "best")
    with open(tmp_path / "full" / "config.json") as f:
        assert TrainConfig.from_dict(json.load(f)) == config

    # The same run in pieces: stop inside epoch 0, then inside epoch 1, then finish.
    piece = tmp_path / "piece"
    first = train_and_evaluate(config.replace(max_steps=2), piece, progress=False)
    assert first["stop_reason"] == "max_steps" and first["steps"] == 2
    # The partial epoch is validated and, no epoch having finished, selected (provisionally).
    assert first["best_epoch"] == 0
    assert [(r["epoch"], r.get("partial_epoch")) for r in read_metrics(piece)] == [(0, True)]
    second = train_and_evaluate(config.replace(max_steps=6), piece, progress=False)
    assert second["session_start_step"] == 2 and second["steps"] == 6
    assert [(r["epoch"], r.get("partial_epoch")) for r in read_metrics(piece)] == [
        (0, None),
        (1, True),
    ]
    last = train_and_evaluate(config, piece, progress=False)
    assert last["session_start_step"] == 6
    for key in ("test_accuracy", "test_loss", "best_val_accuracy", "best_val_loss", "theta"):
        assert last[key] == full[key], key
    resumed = read_metrics(piece)
    assert len(resumed) == 2
    for a, b in zip(resumed, lines, strict=True):
        assert {k: a[k] for k in EXACT_METRICS} == {k: b[k] for k in EXACT_METRICS}

    # A finished run returns its results without training again.
    assert train_and_evaluate(config, piece, progress=False) == last
    assert trace_counts() == after_full  # new runs of the config reuse the compiled steps
    # A different config in the same workdir is refused, naming the keys.
    with pytest.raises(ValueError, match=r"differing: lr, model\.width"):
        train_and_evaluate(config.replace(lr=0.5, model=TINY.replace(width=5)), piece)


def test_metrics_truncated_past_the_resumed_epoch(mnist_data, tmp_path):
    """A line written for an epoch whose checkpoint was never committed is dropped on
    resume (no duplicates); so is a line cut by a kill."""
    config = tiny_config(mnist_data)
    train_and_evaluate(config.replace(max_steps=3), tmp_path, progress=False)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 0, "stale": True}) + "\n")
        f.write('{"epoch": 1, "cut by a ki')
    train_and_evaluate(config.replace(max_steps=4), tmp_path, progress=False)
    lines = read_metrics(tmp_path)
    assert [r["epoch"] for r in lines] == [0] and "stale" not in lines[0]


def test_train_and_evaluate_needs_a_train_config(tmp_path):
    with pytest.raises(ValueError, match="TrainConfig"):
        train_and_evaluate({"dataset": "mnist6_180"}, tmp_path)


def test_public_api_names():
    import pgcnn_jax.train as train

    assert "train_and_evaluate" in train.__all__ and "TrainConfig" in train.__all__
    for name in train.__all__:
        assert hasattr(train, name), name
