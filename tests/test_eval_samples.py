"""eval_samples=K (DESIGN 5): per-example sampled evaluation, independent of the batch; the
K = 1 default is the release's single pass; results.json, the CLI flag and the tables state K."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import TINY, TINY_FLAGS, write_npz
from absl import flags
from flax import nnx

from experiments import evaluate as evaluate_cli
from experiments import mnist6, tables
from experiments.configs import PRESETS
from pgcnn_jax.data import ArrayLoader
from pgcnn_jax.models import build_model
from pgcnn_jax.train import (
    EvalSettings,
    TrainConfig,
    config_differences,
    evaluate,
    evaluate_run,
    example_keys,
    sampled_log_probs,
    step_rngs,
    train_and_evaluate,
)
from pgcnn_jax.train._steps import eval_state

FLAGS = flags.FLAGS

SHAPE = (12, 12, 1)


@pytest.fixture(scope="module")
def model():
    m = build_model(TINY, num_classes=3, in_features=1, rngs=nnx.Rngs(0))
    m.eval()
    return m


def _images(n, seed=1):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, *SHAPE)), np.float32)


def _loader(images, labels, batch_size):
    raw = np.clip(images * 60 + 128, 0, 255).astype(np.uint8)
    return ArrayLoader(raw, labels, mean=(0.5,), std=(0.25,), batch_size=batch_size, train=False)


# ----------------------------------------------------------------------------- the passes


def test_each_pass_is_the_example_alone_with_its_own_key(model):
    x = _images(4)
    keys = example_keys(jax.random.key(2), 5, 4)
    lp = np.asarray(sampled_log_probs(model, x, keys, samples=2))
    assert lp.shape == (2, 4, 3)
    for b in (3,):
        assert jax.random.key_data(keys[b]).tolist() == (
            jax.random.key_data(jax.random.fold_in(jax.random.key(2), 5 + b)).tolist()
        )
        for k in range(2):
            alone = model(x[b : b + 1], rngs=step_rngs(jax.random.fold_in(keys[b], k)))
            np.testing.assert_allclose(lp[k, b], jax.nn.log_softmax(alone[0]), atol=1e-5)
    # The passes do sample: two passes of one example differ (else K would change nothing).
    assert np.abs(lp[0] - lp[1]).max() > 1e-4


def test_passes_do_not_depend_on_batch_composition_or_order(model):
    x = _images(6)
    keys = example_keys(jax.random.key(3), 0, 6)
    whole = np.asarray(sampled_log_probs(model, x[:4], keys[:4], samples=2))
    perm = np.array([2, 0, 3, 1])
    permuted = np.asarray(sampled_log_probs(model, x[perm], keys[perm], samples=2))
    np.testing.assert_allclose(permuted, whole[:, perm], atol=1e-6)
    other = np.array([4, 2, 5, 3])  # examples 2 and 3 in another batch, at other positions
    mixed = np.asarray(sampled_log_probs(model, x[other], keys[other], samples=2))
    np.testing.assert_allclose(mixed[:, [1, 3]], whole[:, [2, 3]], atol=1e-6)
    # Negative control: with the keys left in batch order the permuted examples change.
    wrong = np.asarray(sampled_log_probs(model, x[perm], keys[:4], samples=2))
    assert np.abs(wrong - whole[:, perm]).max() > 1e-4


def test_map_and_vmap_give_the_same_passes(model):
    x = _images(4)
    keys = example_keys(jax.random.key(4), 0, 4)
    a = sampled_log_probs(model, x, keys, samples=2, per_example="map")
    b = sampled_log_probs(model, x, keys, samples=2, per_example="vmap")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_bad_samples_and_keys_raise(model):
    x = _images(2)
    keys = example_keys(jax.random.key(0), 0, 2)
    with pytest.raises(ValueError, match="samples must be a positive int, got 0"):
        sampled_log_probs(model, x, keys, samples=0)
    with pytest.raises(ValueError, match=r"keys must have shape \(2,\)"):
        sampled_log_probs(model, x, keys[:1], samples=2)
    with pytest.raises(ValueError, match="per_example must be one of"):
        sampled_log_probs(model, x, keys, samples=2, per_example="loop")
    with pytest.raises(ValueError, match="eval_samples must be a positive int, got 0"):
        TrainConfig(dataset="mnist6_180", eval_samples=0)


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_averages_per_example_samples_whatever_the_batch_size(model):
    x, labels = _images(7, seed=5), np.array([0, 1, 2, 0, 1, 2, 0])
    config = TrainConfig(dataset="mnist6_180", model=TINY, eval_samples=3)
    key = jax.random.key(6)
    by4 = evaluate(model, _loader(x, labels, 4), key, EvalSettings.of(config))
    by3 = evaluate(model, _loader(x, labels, 3), key, EvalSettings.of(config))
    assert (by4.samples, by4.count, by3.count) == (3, 7, 7)
    assert by4.correct == by3.correct and by4.pass_correct == by3.pass_correct
    assert by4.loss == pytest.approx(by3.loss, abs=1e-5)
    # The numbers are those of the mean softmax of the per-example passes.
    images = next(_loader(x, labels, 7).epoch(0))["image"]
    lp = np.asarray(sampled_log_probs(model, images, example_keys(key, 0, 7), samples=3))
    mean_p = np.exp(lp).mean(axis=0)
    assert by4.correct == int(np.sum(mean_p.argmax(-1) == labels))
    assert by4.pass_correct == [int(np.sum(p.argmax(-1) == labels)) for p in lp]
    assert by4.accuracies == [c / 7 for c in by4.pass_correct]
    nll = -np.log(mean_p[np.arange(7), labels]).mean()
    assert by4.loss == pytest.approx(nll, rel=1e-5)


def test_default_is_the_release_single_pass(model):
    x, labels = _images(7, seed=7), np.array([0, 1, 2, 0, 1, 2, 0])
    config = TrainConfig(dataset="mnist6_180", model=TINY)
    assert config.eval_samples == 1
    loader, key = _loader(x, labels, 4), jax.random.key(8)
    got = evaluate(model, loader, key, EvalSettings.of(config))
    model_def, model_state = nnx.split(model)
    loss_sum = correct = 0
    for i, batch in enumerate(loader.epoch(0)):
        n = len(batch["label"])
        padded = {
            "image": jnp.concatenate([batch["image"], jnp.zeros((4 - n, *SHAPE))]),
            "label": jnp.concatenate([batch["label"], jnp.zeros((4 - n,), jnp.int32)]),
            "mask": (jnp.arange(4) < n).astype(jnp.float32),
        }
        out = eval_state(model_def, model_state, padded, jax.random.fold_in(key, i))
        loss_sum += float(out["loss_sum"])
        correct += int(out["correct"])
    assert (got.samples, got.correct, got.count) == (1, correct, 7)
    assert got.loss_sum == pytest.approx(loss_sum, rel=1e-6)
    assert got.accuracies == [got.accuracy]


def test_configs_stored_before_eval_samples_resume_as_one_pass():
    config = TrainConfig(dataset="mnist6_180", model=TINY)
    stored = config.to_dict()
    del stored["eval_samples"]
    assert config_differences(stored, config) == []
    assert config_differences(stored, config.replace(eval_samples=4)) == ["eval_samples"]


# ----------------------------------------------------------------------------- runs


def _write_mnist_npz(path):
    labels = (np.array([6] * 8 + [1, 2]), np.array([6] * 3 + [0]))
    return write_npz(path, n_train=10, n_test=4, shape=(28, 28), num_classes=10, labels=labels)


def test_cli_eval_samples_flag_and_the_results_fields(tmp_path):
    data = _write_mnist_npz(tmp_path / "mnist.npz")
    workdir = tmp_path / "run"
    args = [
        "mnist6",
        *TINY_FLAGS,
        f"--data={data}",
        "--epochs=1",
        "--max_steps=2",
        "--eval_samples=2",
        f"--workdir={workdir}",
    ]
    FLAGS.unparse_flags()
    try:
        mnist6.main(FLAGS(args))
    finally:
        FLAGS.unparse_flags()
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert results["eval_samples"] == 2 and results["config"]["eval_samples"] == 2
    assert len(results["test_accuracies"]) == 2 and results["test_examples"] == 6
    assert all(0.0 <= a <= 1.0 for a in results["test_accuracies"])
    assert 0.0 <= results["test_accuracy"] <= 1.0
    # A run differing only in K is another run: the workdir refuses it.
    config = TrainConfig.from_dict(results["config"])
    with pytest.raises(ValueError, match="eval_samples"):
        train_and_evaluate(config.replace(eval_samples=3), workdir, progress=False)
    # The default (K = 1, the release's pass) records its one pass in the same fields.
    default = train_and_evaluate(config.replace(eval_samples=1), tmp_path / "k1", progress=False)
    assert default["eval_samples"] == 1 and default["config"]["eval_samples"] == 1
    assert default["test_accuracies"] == [default["test_accuracy"]]
    # Testing the best checkpoint again with the run's K reproduces results.json exactly;
    # experiments.evaluate does the same from the command line and writes --out.
    again = evaluate_run(workdir)
    assert again["eval_samples"] == 2
    assert again["test_accuracy"] == results["test_accuracy"]
    assert again["test_accuracies"] == results["test_accuracies"]
    out = tmp_path / "k3.json"
    FLAGS.unparse_flags()
    try:
        evaluate_cli.main(
            FLAGS(["evaluate", f"--run={workdir}", "--eval_samples=3", f"--out={out}"])
        )
    finally:
        FLAGS.unparse_flags()
    with open(out) as f:
        k3 = json.load(f)
    assert k3["eval_samples"] == 3 and len(k3["test_accuracies"]) == 3
    assert k3["test_examples"] == 6 and k3["which"] == "best"


def test_tables_state_k():
    assert tables.evaluation_text([1, 1]).startswith("evaluation: K = 1, one stochastic pass")
    assert tables.evaluation_text([16]).startswith("evaluation: K = 16, mean softmax")
    assert "K differs between runs (1, 16)" in tables.evaluation_text([16, 1])
    assert tables.eval_samples_of({"eval_samples": 8}) == 8
    assert tables.eval_samples_of({"config": {"eval_samples": 4}}) == 4
    assert tables.eval_samples_of({"config": {}}) == 1


def test_rendered_table_states_k(tmp_path):
    def finish(cell, k):
        config = PRESETS[cell.preset].config.replace(eval_samples=k)
        os.makedirs(cell.workdir(str(tmp_path), 0))
        results = {"test_accuracy": 0.5, "eval_samples": k, "config": config.to_dict()}
        with open(os.path.join(cell.workdir(str(tmp_path), 0), "results.json"), "w") as f:
            json.dump(results, f)

    first, second = tables.grid(1)[:2]
    finish(first, 16)
    text, d = tables.render(1, str(tmp_path))
    assert "- evaluation: K = 16, mean softmax over 16 samplings" in text
    assert d["eval_samples"] == [16] and d["modified"] == []  # K is stated, not a modification
    finish(second, 1)
    text, _ = tables.render(1, str(tmp_path))
    assert "K differs between runs (1, 16)" in text
    assert "| 50.00 (50.0, +0.00) [K=16] | 50.00 (100.0, -50.00) [K=1] |" in text
