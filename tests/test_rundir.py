"""The run directory (RunDir: one lock, one workdir and memory check per run), the typed run
records (EpochRecord, RunResults) and the frozen Objective / EvalSettings values."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _helpers import TINY, tiny_config, write_mnist_npz
from flax import nnx

from pgcnn_jax.models import build_model, kernel_norm_penalty
from pgcnn_jax.train import (
    EpochRecord,
    EvalSettings,
    Objective,
    RunDir,
    RunFiles,
    RunResults,
    TrainConfig,
    _rundir,
    train_and_evaluate,
)

# config.json, metrics.jsonl and results.json of a run written by main at 6127afd:
#   python -m experiments.cifar <TINY_FLAGS> --epochs=2 --max_steps=6
#     --checkpoint_every_steps=3 --data=npz:<20 train / 5 test random images>
# (its second epoch is a validated partial one).
MAIN_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "main_run")


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- records


def test_records_read_the_files_of_a_run_written_by_main():
    files = RunFiles(MAIN_RUN)
    with open(os.path.join(MAIN_RUN, "results.json")) as f:
        stored = json.load(f)
    results = files.read_results()
    assert results.to_dict() == stored  # nothing lost, nothing added
    assert list(results.to_dict()) == list(stored)  # the same key order
    assert (results.test.test_accuracy, results.eval_samples) == (0.2, 1)
    assert (results.stop_reason, results.steps, results.best_epoch) == ("max_steps", 6, 0)
    assert len(results.stats.theta) == len(results.layers) == 3
    assert results.extra == {}

    epochs = files.read_epochs()
    lines = _lines(os.path.join(MAIN_RUN, "metrics.jsonl"))
    assert [r.to_dict() for r in epochs] == lines
    assert [(r.epoch, r.step, r.partial_epoch) for r in epochs] == [(0, 4, False), (1, 6, True)]
    assert epochs[0].stats.axes == lines[0]["axes"] and epochs[0].extra == {}
    assert [r.epoch for r in files.read_epochs(partial=False)] == [0]
    assert files.read_config() == TrainConfig.from_dict(results.config)


def test_records_read_older_and_newer_files():
    # An old results.json: no eval_samples yet (K from its config, else one pass), a key
    # this version does not know (kept and written back).
    old = {"test_accuracy": 0.5, "config": {"epochs": 3}, "theta": [0.5], "future": [1]}
    results = RunResults.from_dict(old)
    assert results.eval_samples == 1 and results.stats.theta == [0.5]
    assert RunResults.from_dict(old | {"config": {"eval_samples": 4}}).eval_samples == 4
    assert results.extra == {"future": [1]} and results.to_dict()["future"] == [1]
    assert results.to_dict()["test_accuracy"] == 0.5 and results.best_epoch is None
    line = EpochRecord.from_dict({"epoch": 2, "train_accuracy": 0.75})
    assert (line.epoch, line.train_accuracy, line.partial_epoch, line.stats.theta) == (
        2, 0.75, False, None,
    )  # fmt: skip
    assert "partial_epoch" not in line.to_dict()  # written only when true
    with pytest.raises(ValueError, match=r"EpochRecord needs the key\(s\) \['epoch'\]"):
        EpochRecord.from_dict({"step": 3})
    with pytest.raises(ValueError, match="read from a JSON object"):
        RunResults.from_dict([1, 2])


# ----------------------------------------------------------------------------- specs


def test_objective_is_one_frozen_value_with_one_penalty_sum(key):
    model = build_model(TINY, num_classes=2, in_features=1, rngs=nnx.Rngs(0))
    model(np.zeros((1, 12, 12, 1), np.float32), rngs=nnx.Rngs(sample=key))  # records norms
    penalty = float(Objective(weight_decay=1e-3).penalty(model))
    assert penalty == pytest.approx(1e-3 * float(kernel_norm_penalty(model)), rel=1e-6)
    assert float(Objective().penalty(model)) == 0.0
    config = TrainConfig(dataset="mnist6_180", weight_decay=2e-4)
    assert Objective.of(config) == Objective(2e-4, 0) and hash(Objective(0, 0)) == hash(Objective())
    for bad in (-1.0, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
            Objective(weight_decay=bad)


def test_eval_settings_hold_what_an_evaluation_reads():
    config = TrainConfig(dataset="mnist6_180", eval_samples=3, monotonic=0.0, devices=1)
    settings = EvalSettings.of(config)
    assert settings == EvalSettings(samples=3, objective=Objective.of(config), devices=1)
    assert EvalSettings.of(config, samples=5).samples == 5
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="eval_samples must be a positive int"):
            EvalSettings.of(config, samples=bad)
    with pytest.raises(ValueError, match="per_example must be one of"):
        EvalSettings(per_example="loop")


# ----------------------------------------------------------------------------- run directory


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    return write_mnist_npz(tmp_path_factory.mktemp("data") / "mnist.npz")


@pytest.fixture
def counts(monkeypatch):
    """How often a run takes the workdir lock and makes the workdir and memory checks."""
    seen = {"lock": 0, "workdir": 0, "memory": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            seen[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(_rundir, real.__name__, wrapper)

    counted("lock", _rundir.lock_workdir)
    counted("workdir", _rundir._refuse_another_config)
    counted("memory", _rundir.check_kernel_memory)
    return seen


def test_a_run_locks_and_checks_its_workdir_once(mnist_data, tmp_path, counts):
    config = tiny_config(mnist_data, max_steps=2)
    first = train_and_evaluate(config, tmp_path / "run", progress=False)
    assert counts == {"lock": 1, "workdir": 1, "memory": 1}
    # Opened by the caller (as the CLI does, before loading the data): not again.
    run_dir = RunDir(tmp_path / "run")
    with run_dir.open(config.replace(max_steps=3)) as opened:
        again = train_and_evaluate(config.replace(max_steps=3), opened, progress=False)
        with pytest.raises(ValueError, match="open for another config"):
            train_and_evaluate(config, opened, progress=False)
        with pytest.raises(ValueError, match="already open"):
            with run_dir.open(config):
                pass
    assert counts == {"lock": 2, "workdir": 2, "memory": 2}
    assert (first["steps"], again["steps"], again["session_start_step"]) == (2, 3, 2)
    assert run_dir.read_results().to_dict() == again
    assert [r.step for r in run_dir.read_epochs()] == [3]  # the partial line of step 3
    with pytest.raises(ValueError, match="is not open"):
        run_dir.record()
