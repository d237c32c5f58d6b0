"""experiments/: presets, flag resolution, every CLI end to end on npz data, resume after a
SIGKILL, and one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _helpers import (
    ROOT,
    TINY_FLAGS,
    read_json,
    read_metrics,
    run_in_process,
    subprocess_env,
    write_npz,
)
from absl import flags
from flax import nnx

from experiments import _cli, cifar, configs, mnist6, pcam, rotmnist
from pgcnn_jax.data import get_spec
from pgcnn_jax.models import build_model, count_params
from pgcnn_jax.train import TrainConfig

FLAGS = flags.FLAGS
EXACT_METRICS = ("step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "theta")


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("npz")
    sixes = (np.array([6] * 8 + [1, 2]), np.array([6] * 3 + [0]))
    return {
        # MNIST6 derives its task from plain MNIST: 8 sixes -> 16 training images.
        "mnist6": write_npz(
            d / "mnist.npz", n_train=10, n_test=4, shape=(28, 28), num_classes=10, labels=sixes
        ),
        "rotmnist": write_npz(d / "rot.npz", n_train=24, n_test=6, shape=(28, 28), num_classes=10),
        "cifar": write_npz(d / "c.npz", n_train=20, n_test=5, shape=(32, 32, 3), num_classes=10),
        "pcam": write_npz(d / "pcam.npz", n_train=20, n_test=3, shape=(96, 96, 3), num_classes=2),
        "dir": d,
    }


def resolve(*args: str, datasets=("cifar10", "cifar100"), dataset=None):
    FLAGS.unparse_flags()
    try:
        FLAGS(["prog", *args])
        return _cli.resolve(datasets, dataset)
    finally:
        FLAGS.unparse_flags()


# ----------------------------------------------------------------------------- presets


def test_presets_cover_the_paper_runs():
    names = set(configs.PRESETS)
    for required in (
        "mnist6_180-se2-partial",
        "mnist6_180-se2-full",
        "mnist6_m-e2-partial",
        "mnist6_m-e2-full",
        "mnist6_m-mirror-partial",
        "mnist6_m-mirror-full",
        "fig4",
        "rotmnist-t2",
        "rotmnist-se2-augerino",
        "rotmnist-gcnn-se2-partial",
        "cifar10-se2-partial",
        "cifar10-se2-mlp",
        "cifar10-se2-t2head",
        "cifar10-e2-augerino",
        "cifar100-e2-t2head",
        "cifar100-gcnn-t2",
        "pcam-se2-partial",
    ):
        assert required in names, required
    for name, preset in configs.PRESETS.items():
        assert isinstance(preset.config, TrainConfig)
        assert preset.command.startswith("python -m experiments.")
        assert f"--preset={name}" in preset.command and preset.paper
    rows = {int(r) for p in configs.PRESETS.values() for r in p.source.split() if r.isdigit()}
    assert set(range(1, 38)) <= rows  # every row of REFERENCE section 7


@pytest.mark.parametrize(
    "name, count",
    [  # REFERENCE 4.1 / 4.3 / 7 parameter counts
        ("fig4", 17063),
        ("rotmnist-se2-partial", 467791),
        ("cifar10-se2-partial", 469903),
        ("cifar100-se2-partial", 475753),
        ("cifar10-se2-full", 469898),
        ("cifar10-e2-partial", 470100),
        ("cifar10-t2", 452186),
        ("cifar10-gcnn-se2-partial", 3994418),
        ("cifar100-gcnn-se2-full", 4017540),
        ("rotmnist-gcnn-se2-full", 3992106),
    ],
)
def test_preset_parameter_counts(name, count):
    config = configs.PRESETS[name].config
    spec = get_spec(config.dataset)
    model = nnx.eval_shape(
        lambda: build_model(
            config.model,
            num_classes=spec.num_classes,
            in_features=spec.image_shape[-1],
            rngs=nnx.Rngs(0),
        )
    )
    assert count_params(model) == count


def test_preset_hyperparameters_follow_reference_rows():
    c = configs.get_preset("cifar10-se2-partial")  # row 17
    assert (c.lr, c.lr_probs, c.weight_decay, c.batch_size, c.epochs) == (1e-3, 1e-4, 1e-4, 64, 300)
    assert c.scheduler == "cosine" and c.model.partial and c.model.pool_blocks == (1, 2)
    r = configs.get_preset("rotmnist-se2-partial")  # row 6
    assert (r.monotonic, r.lr_probs, r.weight_decay) == (1e-3, 0.0, 0.0)
    assert r.model.pool_blocks == (0, 1)
    full = configs.get_preset("cifar10-se2-full")  # row 18 without the MLP flags
    assert not full.model.partial and full.model.head == "pool"
    assert configs.get_preset("cifar10-se2-mlp").model.head == "mlp"
    g = configs.get_preset("rotmnist-gcnn-se2-partial")  # row 13
    assert (g.lr, g.lr_probs, g.batch_size, g.epochs, g.model.width) == (1e-2, 1e-3, 128, 205, 128)
    m = configs.get_preset("mnist6_180-se2-partial")  # row 1
    assert m.model.kernel.net == "magnet" and m.model.sample_per_batch_element
    assert m.scheduler == "constant"
    mirror = configs.get_preset("mnist6_m-mirror-partial")
    assert (mirror.model.group, mirror.model.num_elements) == ("mirror", 2)
    assert mirror.model.sampling == "deterministic"


def test_get_preset_overrides_and_errors():
    c = configs.get_preset("cifar10-se2-partial", num_elements=16, lr=0.1, model="gcnn")
    assert (c.model.num_elements, c.lr, c.model.model) == (16, 0.1, "gcnn")
    t2 = configs.get_preset("cifar10-se2-partial", group="t2")
    assert (t2.model.num_elements, t2.model.partial) == (1, False)
    assert t2.model.sampling == "deterministic"
    with pytest.raises(ValueError, match="unknown preset 'nope'.*cifar10-se2-partial"):
        configs.get_preset("nope")
    with pytest.raises(ValueError, match="unknown config field"):
        configs.get_preset("fig4", widht=3)
    with pytest.raises(ValueError, match="exactly one element"):
        configs.get_preset("cifar10-se2-partial", group="t2", num_elements=8)


def test_flag_resolution():
    name, c = resolve("--group=se2", "--elems=16")  # REFERENCE 7 row 17 with N = 16
    assert name == "cifar10-se2-partial-n16"
    assert c == configs.get_preset("cifar10-se2-partial", num_elements=16)
    name, c = resolve("--group=t2")
    assert name == "cifar10-t2" and c == configs.get_preset("cifar10-t2")
    name, c = resolve("--group=e2", "--nopartial", dataset="cifar100")
    assert name == "cifar100-e2-full" and c.dataset == "cifar100" and not c.model.partial
    name, c = resolve("--model=gcnn", "--elems=4", "--lr=0.5")
    assert name == "cifar10-gcnn-se2-partial-n4" and (c.model.width, c.lr) == (128, 0.5)
    name, c = resolve("--preset=cifar10-se2-partial", "--elems=8", "--seed=2")
    assert name == "cifar10-se2-partial-seed2" and c.seed == 2
    name, c = resolve("--group=mirror", datasets=("mnist6_180", "mnist6_m"), dataset="mnist6_m")
    assert name == "mnist6_m-mirror-partial" and c == configs.get_preset(name)
    name, c = resolve(datasets=("mnist6_180", "mnist6_m"))
    assert name == "mnist6_180-se2-partial"


SEP_PRESETS = [f"{d}-{g}-partial-sep" for d in ("rotmnist", "cifar10") for g in ("se2", "e2")]


@pytest.mark.parametrize("name", SEP_PRESETS)
def test_separable_presets_are_the_partial_ones_with_separable_convs(name):
    preset, base = configs.PRESETS[name], configs.PRESETS[name.removesuffix("-sep")]
    assert preset.config.model.separable and not base.config.model.separable
    assert preset.config == configs.with_overrides(base.config, separable=True)
    assert preset.config.model.kernel.render == "separable"
    assert preset.source.startswith("not in the paper; separable kernels, Knigge et al. 2022")
    assert f"--preset={name}" in preset.command


def test_separable_flag_resolution():
    name, c = resolve("--separable")  # the partial CKResNet: its -sep preset
    assert name == "cifar10-se2-partial-sep" and c == configs.get_preset(name)
    name, c = resolve("--group=e2", "--separable", datasets=("rotmnist",))
    assert name == "rotmnist-e2-partial-sep" and c == configs.get_preset(name)
    name, c = resolve("--group=e2", "--separable", dataset="cifar100")  # no -sep preset there
    assert name == "cifar100-e2-partial-sep" and c.model.separable
    assert c == configs.get_preset("cifar100-e2-partial", separable=True)
    name, c = resolve("--separable", "--nopartial")
    assert name == "cifar10-se2-full-sep"
    assert c == configs.get_preset("cifar10-se2-full", separable=True)
    name, c = resolve("--preset=cifar10-se2-partial-sep", "--noseparable")
    assert name == "cifar10-se2-partial-sep-joint" and c == configs.get_preset(
        "cifar10-se2-partial"
    )
    name, c = resolve("--preset=fig4", "--separable", datasets=("mnist6_180", "mnist6_m"))
    assert name == "fig4-sep" and c == configs.get_preset("fig4", separable=True)
    name, c = resolve("--preset=cifar10-se2-partial-sep")  # the preset's default stays
    assert name == "cifar10-se2-partial-sep" and c.model.separable
    assert not resolve()[1].model.separable
    # The kernel net's settings: --set reaches them by their flat names.
    name, c = resolve("--kernel=gabor", "--set=mfn_alpha=3.0", "--set=mfn_input_scale=64")
    assert (c.model.kernel.options.alpha, c.model.kernel.options.input_scale) == (3.0, 64.0)
    with pytest.raises(ValueError, match=r"'siren' has no setting\(s\) \['alpha'\]"):
        resolve("--set=mfn_alpha=3.0")


# ----------------------------------------------------------------------------- end to end


CLIS = {"mnist6": mnist6, "rotmnist": rotmnist, "cifar": cifar, "pcam": pcam}
# Per CLI: extra flags and the number of partial layers of the tiny model (pcam: separable
# group convs, whose partial sampling works unchanged).
VARIANTS = {"mnist6": ([], 3), "rotmnist": (["--group=e2"], 3), "cifar": (["--nopartial"], 0),
            "pcam": (["--separable"], 3)}  # fmt: skip


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_cli_end_to_end_and_resume(cli, data, tmp_path, capsys):
    module = CLIS[cli]
    extra, num_partial = VARIANTS[cli]
    workdir = tmp_path / "run"
    args = (*TINY_FLAGS, *extra, f"--data={data[cli]}", "--epochs=1", f"--workdir={workdir}")
    assert run_in_process(module, *args, "--max_steps=2") == 0
    err = capsys.readouterr().err
    assert "nothing is downloaded" in err  # describe_source is printed first
    first = read_json(workdir / "results.json")
    assert (first["stop_reason"], first["steps"], first["session_start_step"]) == (
        "max_steps",
        2,
        0,
    )
    render = first["config"]["model"]["kernel"]["render"]
    assert render == ("separable" if "--separable" in extra else "joint")
    # The partial epoch is recorded (and selected: no epoch has finished).
    assert [(r["epoch"], r["partial_epoch"]) for r in read_metrics(workdir)] == [(0, True)]
    assert first["best_epoch"] == 0
    assert sorted(os.listdir(workdir / "checkpoints")) == ["best", "latest"]
    assert os.listdir(workdir / "checkpoints" / "latest") == ["2"]

    # The same command without --max_steps continues at step 2 (it does not start over).
    assert run_in_process(module, *args) == 0
    out = capsys.readouterr().out
    results = read_json(workdir / "results.json")
    assert json.loads(out.strip().splitlines()[-1])["test_accuracy"] == results["test_accuracy"]
    assert results["session_start_step"] == 2 and results["stop_reason"] == "completed"
    assert results["epochs"] == 1 and results["best_epoch"] == 0
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["num_params"] > 0
    assert np.isfinite(results["test_loss"]) and results["config"] == read_json(
        workdir / "config.json"
    )
    assert len(results["theta"]) == len(results["elements"]) == num_partial
    kept = [a["rotation"]["kept"] * a.get("mirror", {"kept": 1})["kept"] for a in results["axes"]]
    assert kept == results["elements"]  # per-axis counts, logged for every partial layer
    if "--group=e2" in extra:
        assert all(0.0 < p < 1.0 for p in results["mirror_prob"])
    lines = read_metrics(workdir)
    assert len(lines) == 1 and lines[0]["step"] == results["steps"]
    # the distribution parameters' gradient SNR over the epoch's steps (both sessions), per layer
    snr = lines[0]["grad_snr"]
    assert len(snr) == num_partial and all(np.isfinite(g["theta"]) and g["theta"] >= 0 for g in snr)
    assert all(("mirror" in g) == ("--group=e2" in extra) for g in snr)
    assert os.listdir(workdir / "checkpoints" / "best") == ["0"]


# ----------------------------------------------------------------------------- SIGKILL


KILL_ARGS = (*TINY_FLAGS, "--epochs=3", "--checkpoint_every_steps=1", "--task=180")


def _args(workdir, data):
    return (*KILL_ARGS, f"--data={data['mnist6']}", f"--workdir={workdir}")


def _start(workdir, data, env):
    cmd = [sys.executable, "-m", "experiments.mnist6", *_args(workdir, data)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    """An uninterrupted run, in this process (``main`` as ``python -m`` runs it): the killed
    run below is the real process; its reference and its resumption need not be."""
    root = tmp_path_factory.mktemp("kill")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert run_in_process(mnist6, *_args(root / "reference", data)) == 0
    env = subprocess_env(root / "jax_cache")
    return {"workdir": root / "reference", "root": root, "env": env, "stdout": stdout.getvalue()}


def test_killed_run_resumes_to_identical_results(reference_run, data, capsys):
    """A real ``python -m`` process killed with SIGKILL inside epoch 1, resumed (in this
    process) to the reference's numbers."""
    ref = reference_run["workdir"]
    workdir = reference_run["root"] / "killed"
    proc = _start(workdir, data, reference_run["env"])
    deadline = time.monotonic() + 240
    latest = workdir / "checkpoints" / "latest"

    # Kill once a checkpoint inside epoch 1 exists (4 steps per epoch, one save per step).
    def in_epoch_one():
        names = os.listdir(latest) if os.path.isdir(latest) else []
        return any(n.isdigit() and int(n) > 4 for n in names)

    while not in_epoch_one():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(workdir / "results.json"), "killed too late to test anything"

    assert run_in_process(mnist6, *_args(workdir, data)) == 0, capsys.readouterr().err
    a, b = read_json(ref / "results.json"), read_json(workdir / "results.json")
    assert b["session_start_step"] > 0  # resumed, not restarted
    for key in ("test_accuracy", "test_loss", "best_val_accuracy", "best_epoch", "steps", "theta"):
        assert a[key] == b[key], key
    la, lb = read_metrics(ref), read_metrics(workdir)
    assert [r["epoch"] for r in lb] == [0, 1, 2]
    for ra, rb in zip(la, lb, strict=True):
        assert {k: ra[k] for k in EXACT_METRICS} == {k: rb[k] for k in EXACT_METRICS}
    summary = json.loads(reference_run["stdout"].strip().splitlines()[-1])
    assert summary["test_accuracy"] == a["test_accuracy"]


def test_subprocess_errors_are_one_line(reference_run, data):
    """Real ``python -m`` runs: an unknown preset and a workdir holding another config."""
    env = reference_run["env"]
    for extra in (
        ["--preset=cifar10-se2-nope"],
        [f"--workdir={reference_run['workdir']}", f"--data={data['mnist6']}", "--lr=0.5"],
    ):
        cmd = [sys.executable, "-m", "experiments.mnist6", *KILL_ARGS, *extra]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ")
        assert "unknown preset" in lines[-1] or "differing: lr" in lines[-1]


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def bad_npz(data):
    d = data["dir"]
    x = np.zeros((8, 28, 28), np.uint8)
    np.savez(d / "keys.npz", x_train=x, x_test=x, y_test=np.zeros(8, int))
    return {
        "missing": f"npz:{d / 'does_not_exist.npz'}",
        "keys": f"npz:{d / 'keys.npz'}",
        "labels": write_npz(
            d / "labels.npz",
            n_train=8,
            n_test=2,
            shape=(28, 28),
            num_classes=10,
            labels=(np.array([0, 1, 2, 3, 4, 5, 6, 11]), np.array([0, 1])),
        ),
        "rank": write_npz(d / "rank.npz", n_train=8, n_test=4, shape=(28,), num_classes=10),
    }


@pytest.mark.parametrize(
    "module, args, message",
    [
        (cifar, ["--preset=nope"], "unknown preset 'nope'"),
        (cifar, ["--preset=mnist6_m-e2-full"], "is run by python -m experiments.mnist6"),
        (cifar, ["--group=so3"], "unknown group 'so3'"),
        (cifar, ["--dataset=mnist"], "unknown dataset 'mnist'"),
        (cifar, ["--elems=0"], "num_elements must be >= 1"),
        (cifar, ["--group=e2", "--elems=3"], "even num_elements"),
        (cifar, ["--group=t2", "--elems=8"], "exactly one element"),
        (cifar, ["--model=resnet"], "unknown model"),
        (cifar, ["--set=widht=3"], "unknown config field 'widht'"),
        (cifar, ["stray"], "unexpected arguments: stray"),
        (mnist6, ["--task=90"], "unknown task '90'"),
        (rotmnist, ["--data=npz:{missing}"], "npz file not found"),
        (rotmnist, ["--data=npz:{keys}"], "lacks key(s) ['y_train'"),
        (rotmnist, ["--data=npz:{labels}"], "outside [0, 10)"),
        (rotmnist, ["--data=npz:{rank}"], "must have rank 3"),
    ],
)
def test_cli_errors_are_one_line(module, args, message, bad_npz, tmp_path, capsys):
    args = [a.format(**{k: v[4:] for k, v in bad_npz.items()}) for a in args]
    code = run_in_process(module, *args, f"--workdir={tmp_path / 'w'}", "--noprogress")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: ") and message in err[-1], err
