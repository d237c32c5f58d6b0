"""Training that goes wrong says so (issue 7, section 2): divergence, a shared workdir, corrupt
checkpoints, models too large to render, integer images and non-finite layer parameters.

The divergence and corrupt-checkpoint cases run ``experiments.cifar``'s ``main`` in this process
on a tiny npz, as ``python -m`` would (sharing the compiled steps); the lock case runs it in a
real subprocess, since another process holding the workdir is its point. New public names are
imported inside the tests, so each test fails for its own reason on code without them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import ROOT, TINY_FLAGS, run_in_process, subprocess_env, write_npz
from flax import nnx

from pgcnn_jax.groups import get_group, sample_elements
from pgcnn_jax.kernels import KernelSpec
from pgcnn_jax.models import ModelConfig, build_model
from pgcnn_jax.nn import GroupConv, GroupFeatures, LiftingConv

GUARD_FLAGS = (*TINY_FLAGS, "--epochs=2", "--checkpoint_every_steps=1")


def _reject_constant(token):
    raise ValueError(f"invalid JSON token {token}")


def strict_load(text: str):
    """``json.loads`` that refuses the ``NaN`` / ``Infinity`` tokens Python writes."""
    return json.loads(text, parse_constant=_reject_constant)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    data = write_npz(root / "tiny.npz", n_train=20, n_test=5, shape=(32, 32, 3), num_classes=10)
    env = subprocess_env(root / "jax_cache")  # later runs reuse executables
    return {"root": root, "data": f"--data={data}", "env": env}


def cli(env, workdir, *extra: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """``python -m experiments.cifar`` on the tiny npz, in a subprocess."""
    cmd = [sys.executable, "-m", "experiments.cifar", *GUARD_FLAGS, env["data"]]
    cmd += [f"--workdir={workdir}", *extra]
    return subprocess.run(
        cmd, cwd=ROOT, env=env["env"], capture_output=True, text=True, timeout=timeout
    )


def cli_in_process(env, workdir, *extra: str, capsys=None) -> subprocess.CompletedProcess:
    """The same command run in this process (its exit code and, given ``capsys``, its
    stderr), as ``python -m`` would run it."""
    from experiments import cifar

    code = run_in_process(cifar, *GUARD_FLAGS, env["data"], f"--workdir={workdir}", *extra)
    err = capsys.readouterr().err if capsys is not None else ""
    return subprocess.CompletedProcess(["experiments.cifar"], code, "", err)


def error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), proc.stderr
    return line


# ----------------------------------------------------------------------------- divergence


def test_diverging_run_stops_with_an_error_and_keeps_finite_checkpoints(env, capsys):
    workdir = env["root"] / "diverged"
    proc = cli_in_process(env, workdir, "--lr=1e30", "--scheduler=constant", capsys=capsys)
    line = error_line(proc)
    assert "training diverged" in line and "NaN" in line
    assert not os.path.exists(workdir / "results.json")
    # Step 0 leaves huge but finite weights (saved as step 1); step 1 is NaN and not saved.
    ckpt = workdir / "checkpoints"
    assert os.listdir(ckpt / "latest") == ["1"]
    assert os.listdir(ckpt / "best") == []  # no non-finite epoch is selected
    from pgcnn_jax.train import load_run

    model, _ = load_run(workdir, which="latest")
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    with open(workdir / "metrics.jsonl") as f:
        records = [strict_load(line) for line in f if line.strip()]
    assert records == []  # no epoch finished with finite numbers


def test_metrics_and_results_are_strict_json(tmp_path):
    from pgcnn_jax.train._metrics import MetricsLog, write_json

    record = {"loss": math.nan, "theta": [math.inf, 0.5, -math.inf], "n": {"x": math.nan}}
    write_json(str(tmp_path / "r.json"), record)
    log = MetricsLog(str(tmp_path / "m.jsonl"))
    log.append({"epoch": 0} | record)
    log.append({"epoch": 1, "loss": 0.25})
    log.truncate(2)
    want = {"loss": None, "theta": [None, 0.5, None], "n": {"x": None}}
    assert strict_load((tmp_path / "r.json").read_text()) == want
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [strict_load(x) for x in lines] == [{"epoch": 0} | want, {"epoch": 1, "loss": 0.25}]


def _e2_features(key, n=4):
    elements, mask = sample_elements(get_group("e2"), None, n, sampling="deterministic")
    return GroupFeatures(jax.random.normal(key, (1, 5, 5, n, 3)), elements, mask)


@pytest.mark.parametrize(
    "sampling, name, value",
    [("random", "theta", math.nan), ("random", "mirror", math.inf),
     ("deterministic", "keep", math.nan)],
)  # fmt: skip
def test_layers_refuse_non_finite_distribution_params(key, sampling, name, value):
    h = _e2_features(key)
    conv = GroupConv(
        3, 3, group="e2", num_elements=4, kernel_size=3, kernel=KernelSpec(hidden=8), partial=True,
        sampling=sampling, rngs=nnx.Rngs(0),
    )  # fmt: skip
    param = getattr(conv, name)
    param[...] = jnp.full(param[...].shape, value)
    with pytest.raises(ValueError, match=f"GroupConv parameter '{name}' is not finite"):
        conv(h, rngs=nnx.Rngs(sample=2))
    if name == "theta":  # under jit the values are traced; the training loop checks them
        out = nnx.jit(lambda m, h: m(h, rngs=nnx.Rngs(sample=2)).values)(conv, h)
        assert out.shape == h.values.shape


# ----------------------------------------------------------------------------- integer images


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.bool_])
def test_lifting_conv_casts_integer_images(dtype):
    lift = LiftingConv(
        1, 2, group="se2", num_elements=4, kernel_size=3, sampling="deterministic",
        kernel=KernelSpec(hidden=8), rngs=nnx.Rngs(0),
    )  # fmt: skip
    x = np.arange(2 * 5 * 5).reshape(2, 5, 5, 1) % 7
    x = (x > 3) if dtype == np.bool_ else x.astype(dtype)
    out = lift(x).values
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, lift(np.asarray(x, np.float32)).values)
    with pytest.raises(ValueError, match="complex64"):
        lift(np.asarray(x, np.complex64))


# ----------------------------------------------------------------------------- model size


def test_models_too_large_to_render_are_refused_before_building():
    from pgcnn_jax.models import check_kernel_memory, kernel_memory_bytes

    tiny = ModelConfig(width=4, kernel_hidden=8, num_elements=4, kernel_size=3)
    small = kernel_memory_bytes(tiny, in_features=3)
    # The group conv dominates and grows with N^2 and with the element sets per forward.
    assert kernel_memory_bytes(tiny.replace(num_elements=8), in_features=3) == 4 * small
    assert kernel_memory_bytes(tiny, in_features=3, num_samples=5) == 5 * small
    assert check_kernel_memory(tiny, in_features=3, limit=small) == small
    with pytest.raises(ValueError, match=r"about 82\.7 KiB .* more than the 82\.7 KiB of given"):
        check_kernel_memory(tiny, in_features=3, limit=small - 1)
    # The CLI case --elems=100000: petabytes, refused by build_model itself, at once.
    huge = ModelConfig(num_elements=100_000)
    with pytest.raises(ValueError, match=r"needs about 14\.4 PiB \(num_elements=100000"):
        build_model(huge, num_classes=10, in_features=3, rngs=nnx.Rngs(0))


def test_cli_refuses_a_model_too_large_and_leaves_nothing(env, tmp_path, capsys):
    from absl import flags

    from experiments import cifar

    workdir = tmp_path / "huge"
    flags.FLAGS.unparse_flags()
    argv = ["cifar", env["data"], "--elems=100000", f"--workdir={workdir}", "--noprogress"]
    try:
        with pytest.raises(SystemExit) as exit_:
            cifar.main(flags.FLAGS(argv))
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: rendering the kernels of this model needs about")
    assert not os.path.exists(workdir)  # refused before anything was written


# ----------------------------------------------------------------------------- workdir lock


def test_second_process_on_a_workdir_exits_at_once(env, tmp_path):
    workdir = tmp_path / "shared"
    workdir.mkdir()
    with open(workdir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a first run holds the workdir
        proc = cli(env, workdir, timeout=120)
    line = error_line(proc)
    assert str(workdir) in line and "in use by another process" in line
    assert sorted(os.listdir(workdir)) == [".lock"]  # nothing written, nothing deleted


def test_workdir_lock_is_exclusive_reentrant_and_survives_stale_files(tmp_path):
    from pgcnn_jax.train import WorkdirLocked, lock_workdir

    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / ".lock").write_text("12345\n")  # left by a crashed run: nobody holds it
    with lock_workdir(workdir):
        with lock_workdir(workdir):  # nested in one process: the same lock
            pass
        # Another descriptor (as another process would open it) cannot take it.
        with open(workdir / ".lock") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert other.read().strip() == str(os.getpid())
    assert not os.path.exists(workdir / ".lock")  # a clean release removes it
    with open(workdir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(WorkdirLocked, match=str(workdir)):
            with lock_workdir(workdir):
                pass
    # A refused run leaves no directory of its own behind.
    fresh = tmp_path / "fresh"
    with lock_workdir(fresh):
        assert os.path.isdir(fresh)
    assert not os.path.exists(fresh)


# ----------------------------------------------------------------------------- corrupt checkpoints


@pytest.fixture(scope="module")
def stopped_run(env):
    """A run stopped at step 2 with a checkpoint after each step."""
    workdir = env["root"] / "stopped"
    proc = cli_in_process(env, workdir, "--max_steps=2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(workdir / "checkpoints" / "latest")) == ["1", "2"]
    return workdir


def _truncate_arrays(step_dir):
    files = list((step_dir / "state").rglob("d/*"))
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def test_corrupt_latest_checkpoint_resumes_from_the_older_one(env, stopped_run, capsys, caplog):
    workdir = env["root"] / "corrupt_arrays"
    shutil.copytree(stopped_run, workdir)
    latest = workdir / "checkpoints" / "latest"
    _truncate_arrays(latest / "2")
    with caplog.at_level(logging.WARNING):
        proc = cli_in_process(env, workdir, "--max_steps=3", capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # (in a subprocess the warning goes to stderr; here it is a log record)
    warning = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warning) == 1, caplog.text
    assert f"{latest / '2'} is unreadable" in warning[0]
    assert f"resuming from the older checkpoint {latest / '1'}" in warning[0]
    results = strict_load((workdir / "results.json").read_text())
    assert (results["session_start_step"], results["steps"]) == (1, 3)
    assert os.listdir(workdir / "checkpoints" / "corrupt") == ["latest-2"]  # kept, not lost
    assert sorted(os.listdir(latest)) == ["2", "3"]


def test_corrupt_checkpoints_without_an_intact_one_give_one_line(env, stopped_run, capsys):
    workdir = env["root"] / "corrupt_metadata"
    shutil.copytree(stopped_run, workdir)
    for step in ("1", "2"):
        path = workdir / "checkpoints" / "latest" / step / "state" / "_METADATA"
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    line = error_line(cli_in_process(env, workdir, "--max_steps=3", capsys=capsys))
    ckpt = workdir / "checkpoints"
    assert f"checkpoint {ckpt / 'latest' / '1'} is unreadable" in line
    assert f"delete {ckpt}" in line
