"""load_run and experiments/figures.py on two tiny trained MNIST6-180 runs (Figure-4 preset):
a partial E(2) model (learned theta and mirror probability, Gumbel counters) and a full SE(2)
model with deterministic sampling (exactly equivariant to quarter turns)."""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
from _helpers import write_mnist_npz  # tests/ is on sys.path
from flax import nnx

from experiments import figures
from experiments.configs import get_preset
from pgcnn_jax.analysis import conv_layers
from pgcnn_jax.data import load_dataset
from pgcnn_jax.models import partial_layers
from pgcnn_jax.nn import GumbelStep
from pgcnn_jax.train import (
    EvalSettings,
    TrainConfig,
    create_model,
    evaluate,
    load_run,
    train_and_evaluate,
)
from pgcnn_jax.train._state import TEST_SALT, root_key

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(
    width=4,
    kernel_hidden=8,
    kernel_size=3,
    epochs=1,
    max_steps=2,
    batch_size=8,
    checkpoint_every_steps=0,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("figure_runs")
    data = write_mnist_npz(root / "mnist.npz")
    configs = {
        "partial": get_preset("fig4", data=data, group="e2", **TINY),
        "full": get_preset(
            "fig4",
            data=data,
            partial=False,
            sampling="deterministic",
            sample_per_layer=False,
            **TINY,
        ),
    }
    out = {}
    for name, config in configs.items():
        workdir = str(root / name)
        results = train_and_evaluate(config, workdir, progress=False)
        assert results["best_epoch"] == 0 and results["steps"] == 2
        out[name] = workdir
    out["root"] = root
    return out


def read_json(path):
    with open(path) as f:
        return json.load(f)


def check_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC and os.path.getsize(path) > 1000


def run_main(capsys, *args):
    code = figures.main(["figures", *args])
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- load_run


@pytest.mark.parametrize("name", ["partial", "full"])
def test_load_run_restores_the_tested_weights(runs, name):
    workdir = runs[name]
    model, config = load_run(workdir)
    results = read_json(os.path.join(workdir, "results.json"))
    assert config == TrainConfig.from_dict(read_json(os.path.join(workdir, "config.json")))
    # The test pass of train_and_evaluate, repeated on the restored model, gives its numbers.
    splits = load_dataset(
        config.dataset, data=config.data, batch_size=config.batch_size, seed=config.seed
    )
    test = evaluate(model, splits.test, root_key(config.seed, TEST_SALT), EvalSettings.of(config))
    assert test.accuracy == results["test_accuracy"]
    assert test.loss == pytest.approx(results["test_loss"], rel=1e-5)
    # Restored, not freshly initialised; in eval mode.
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    fresh = jax.tree.leaves(nnx.state(create_model(config), nnx.Param))
    assert any(not np.array_equal(a, b) for a, b in zip(params, fresh, strict=True))
    flags = [m.deterministic for _, m in conv_layers(model) if hasattr(m, "deterministic")]
    assert flags and all(flags)
    # One finished epoch: the latest checkpoint holds the same model state.
    latest, _ = load_run(workdir, which="latest")
    for a, b in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(latest)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    if name == "partial":
        steps = [int(s) for s in jax.tree.leaves(nnx.state(model, GumbelStep))]
        assert steps and all(s == results["steps"] for s in steps)  # Gumbel counters
        thetas = [float(layer.theta[...]) for _, layer in partial_layers(model)]
        assert thetas and results["theta"] == pytest.approx(thetas)


def test_load_run_accepts_relative_paths(runs, monkeypatch):
    workdir = runs["full"]
    monkeypatch.chdir(os.path.dirname(workdir))
    model, _ = load_run(os.path.basename(workdir))
    reference, _ = load_run(workdir)
    for a, b in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(reference)), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_load_run_errors(runs, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json"):
        load_run(tmp_path)
    shutil.copy(os.path.join(runs["full"], "config.json"), tmp_path / "config.json")
    with pytest.raises(ValueError, match="no 'best' checkpoint"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="which must be"):
        load_run(runs["full"], which="final")


# ----------------------------------------------------------------------------- figures


def test_fig4(runs, tmp_path, capsys):
    code, err = run_main(
        capsys, "--fig=4", f"--run={runs['partial']}", f"--run={runs['full']}", f"--out={tmp_path}"
    )
    assert code == 0, err
    check_png(tmp_path / "fig4.png")
    record = read_json(tmp_path / "fig4.json")
    assert record["angles_deg"] == list(range(-180, 181)) and len(record["angles_deg"]) == 361
    assert record["image"] == {"class0_index": 0, "test_index": 0, "label": 0}
    assert record["dataset"] == "mnist6_180" and record["date"] and record["checkpoint"] == "best"
    labels = [r["label"] for r in record["runs"]]
    assert labels == ["partial G-CNN (E2, N=4)", "G-CNN (SE2, N=4)"]
    assert [r["run"] for r in record["runs"]] == [runs["partial"], runs["full"]]
    for entry in record["runs"]:
        p = np.asarray(entry["p_class0"])
        assert p.shape == (361,) and np.all((p >= 0) & (p <= 1))
        assert entry["test_accuracy"] is not None
    # The full SE(2) G-CNN with the quarter-turn grid is invariant to quarter turns.
    full = np.asarray(record["runs"][1]["p_class0"])
    for angle in (-180, -90, 90, 180):
        assert full[angle + 180] == pytest.approx(full[180], abs=1e-5)


def test_fig4_index_and_default_out(runs):
    result = figures.run("4", [runs["full"]], index=2)
    assert result["png"] == os.path.join(runs["full"], "figures", "fig4.png")
    check_png(result["png"])
    record = read_json(result["json"])
    assert record["image"]["class0_index"] == 2 and record["image"]["test_index"] == 2
    assert len(record["runs"]) == 1


def test_subsets(runs, tmp_path, capsys):
    code, err = run_main(
        capsys,
        "--fig=subsets",
        f"--run={runs['partial']}",
        f"--run={runs['full']}",
        f"--out={tmp_path}",
    )
    assert code == 0, err
    check_png(tmp_path / "subsets.png")
    record = read_json(tmp_path / "subsets.json")
    assert [r["group"] for r in record["runs"]] == ["e2", "se2"]
    for entry, name in zip(record["runs"], ("partial", "full"), strict=True):
        model, _ = load_run(runs[name])
        layers = dict(conv_layers(model))
        names = [layer["name"] for layer in entry["layers"]]
        assert sorted(names) == sorted(layers) and names[0] == "lift"
        for layer in entry["layers"]:
            module = layers[layer["name"]]
            theta = getattr(module, "theta", None)
            want = 1.0 if theta is None else float(theta[...])
            rotation, mirror = layer["axes"]["rotation"], layer["axes"].get("mirror")
            assert rotation["width"] == pytest.approx(want)
            assert rotation["interval_deg"] == pytest.approx([-180 * abs(want), 180 * abs(want)])
            assert 1 <= layer["n_prime"] <= 4 and layer["num_elements"] == 4
            if name == "partial":
                assert 0.0 <= mirror["width"] <= 1.0
                if layer["name"] != "lift":
                    want_p = 1 / (1 + math.exp(-2 * float(module.mirror[...])))
                    assert mirror["width"] == pytest.approx(want_p, rel=1e-5)
            else:
                assert mirror is None and layer["n_prime"] == 4
                assert rotation["width"] == 1.0 and not layer["partial"]


def test_equivariance(runs, tmp_path):
    result = figures.run(
        "equivariance", [runs["full"], runs["partial"]], tmp_path, step=45, num_images=2
    )
    check_png(result["png"])
    record = read_json(tmp_path / "equivariance.json")
    assert record == result["record"]
    angles = record["angles_deg"]
    assert angles == [0, 45, 90, 135, 180, 225, 270, 315, 360]
    full, partial = record["runs"]
    assert full["test_indices"] == [0, 1] and partial["test_indices"] == [0, 1]
    model, _ = load_run(runs["full"])
    assert set(full["errors"]) == {n for n, _ in conv_layers(model)}
    for entry in (full, partial):
        for errs in entry["errors"].values():
            assert len(errs) == len(angles) and np.all(np.isfinite(errs))
    for errs in full["errors"].values():
        for angle in (0, 90, 180, 270, 360):
            assert errs[angles.index(angle)] < 1e-4


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "--fig is required"),
        (("--fig=4",), "at least one run directory"),
        (("--fig=5", "--run=x"), "--fig"),
        (("--fig=4", "--run={root}/missing"), "does not exist"),
        (("--fig=4", "--run={root}/no_ckpt"), "no 'best' checkpoint"),
        (("--fig=4", "--run={root}/rotmnist"), "needs MNIST6 runs"),
        (("--fig=4", "--run={full}", "--index=99"), "has only 4 images of class 0"),
        (("--fig=equivariance", "--run={full}", "--step=0"), "--step must be"),
        (("--fig=subsets", "--run={full}", "extra"), "unexpected arguments"),
    ],
)
def test_cli_errors(runs, capsys, args, message):
    root = runs["root"]
    for name, dataset in (("no_ckpt", "mnist6_180"), ("rotmnist", "rotmnist")):
        os.makedirs(root / name, exist_ok=True)
        config = read_json(os.path.join(runs["full"], "config.json")) | {"dataset": dataset}
        with open(root / name / "config.json", "w") as f:
            json.dump(config, f)
    args = [a.format(root=root, full=runs["full"]) for a in args]
    code, err = run_main(capsys, *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
