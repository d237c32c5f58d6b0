"""experiments.bench: the line format and JSON of a tiny run, the conv collection behind the
floor, flag errors, and imports free of TensorFlow (the prepared GPU run needs none)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _floor, bench
from pgcnn_jax.nn import conv2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = r"[0-9]+(?:\.[0-9]+)?"
LINE = re.compile(
    rf"^pgcnn (?P<config>\S+) batch=(?P<batch>[0-9]+) ms_per_step=(?P<ms>{NUM}) "
    rf"floor_ms=(?P<floor>{NUM}) ratio=(?P<ratio>{NUM}) min=(?P<min>{NUM}) max=(?P<max>{NUM}) "
    rf"peak_mem_mb=(?P<peak>{NUM}|na) compile_s=(?P<compile>{NUM}) "
    rf"gflop=(?P<gflop>{NUM}(?:e-?[0-9]+)?) real_gflop=(?P<real>{NUM}(?:e-?[0-9]+)?) "
    rf"real_gflops=(?P<rate>{NUM}(?:e[-+]?[0-9]+)?) depthwise=(?P<dw>conv|taps)$"
)
TINY = [
    "--batch=2",
    "--steps=2",
    "--warmup=0",
    "--image_size=6",
    "--width=2",
    "--kernel_size=3",
    "--set=num_blocks=1",
    "--set=block_width_factors=[1, 1]",
    "--set=pool_blocks=[1]",
    "--set=kernel_hidden=4",
]


def test_tiny_run_line_format_and_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    status = bench.main(["bench", "--configs=t2", *TINY, f"--json={path}"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# pgcnn bench: device=") and "jax=" + jax.__version__ in lines[0]
    assert lines[1].startswith("# command: python -m experiments.bench --configs=t2")
    assert len(lines) == 3
    m = LINE.match(lines[2])
    assert m is not None, lines[2]
    assert (m["config"], m["batch"]) == ("t2", "2")
    ms, floor, ratio = float(m["ms"]), float(m["floor"]), float(m["ratio"])
    assert float(m["min"]) <= ms <= float(m["max"])
    assert ratio == pytest.approx(ms / floor, rel=2e-2, abs=2e-3)
    assert float(m["gflop"]) > 0
    d = json.loads(path.read_text())
    (r,) = d["results"]
    assert d["header"]["device_kind"] == jax.local_devices()[0].device_kind
    assert r["config"] == "t2" and len(r["step_ms"]) == len(r["floor_ms_all"]) == 2
    # The floor runs the step's convs (forward and backward) and nothing else.
    assert 0 < r["floor_gflop"] <= r["gflop"]
    assert r["num_convs"] == len(r["conv_shapes"]) >= 3


@pytest.mark.parametrize("depthwise", ["conv", "taps"])
def test_tiny_separable_run_times_its_1x1_and_depthwise_convs(tmp_path, capsys, depthwise):
    """``<group>-<N>-<kind>-sep``: the step of separable group convs, and a floor that holds
    their 1x1 mixing convs and (``--depthwise=conv``) depthwise convs (forward and backward),
    nothing more; the real multiply-adds are the same whichever formulation runs."""
    path = tmp_path / "bench.json"
    args = ["bench", "--configs=se2-2-partial-sep", *TINY, f"--json={path}"]
    status = bench.main([*args, f"--depthwise={depthwise}"])
    assert status == 0
    m = LINE.match(capsys.readouterr().out.splitlines()[2])
    assert m is not None and m["config"] == "se2-2-partial-sep" and m["dw"] == depthwise
    (r,) = json.loads(path.read_text())["results"]
    assert r["preset_config"]["model"]["kernel"]["render"] == "separable"
    assert 0 < r["floor_gflop"] <= r["gflop"]
    rhs = [tuple(shape[1]) for shape in r["conv_shapes"]]
    # width 2 x N 2 = 4 channels: the 1x1 mixing 4 -> 4, the 3x3 depthwise conv (1 input
    # channel per group) and its kernel gradient (batch-grouped: 4 output features).
    assert (1, 1, 4, 4) in rhs
    assert ((3, 3, 1, 4) in rhs) == (depthwise == "conv")
    assert (3, 3, 4, 4) not in rhs  # no joint 3x3 group conv is left
    assert r["real_gflop"] == pytest.approx(float(m["real"]), rel=1e-3)
    assert r["real_gflops"] == pytest.approx(r["real_gflop"] / (r["ms_per_step"] / 1e3))
    assert r["real_gflop"] > r["floor_gflop"] * (depthwise == "taps")


def test_conv_macs_counts_grouped_and_plain_convs():
    x, w = jnp.zeros((2, 8, 8, 6)), jnp.zeros((3, 3, 2, 6))
    dims = ("NHWC", "HWIO", "NHWC")

    def f(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=dims, feature_group_count=3
        )

    convs = _floor.collect_convs(jax.make_jaxpr(f)(x, w))
    assert _floor.conv_macs(convs) == 2 * 8 * 8 * 6 * (3 * 3 * 2)
    grads = _floor.collect_convs(jax.make_jaxpr(jax.grad(lambda x, w: f(x, w).sum(), (0, 1)))(x, w))
    assert len(grads) == 3  # forward, input gradient, kernel gradient (batch-grouped)
    assert _floor.conv_macs(grads) == 3 * 2 * 8 * 8 * 6 * (3 * 3 * 2)


def test_bench_config_names():
    config, half = bench.bench_config("se2-16-partial-half", precision="bfloat16")
    assert half and config.model.num_elements == 16 and config.model.partial
    assert config.model.precision == "bfloat16" and config.dataset == "cifar10"
    config, half = bench.bench_config("e2-8-full")
    assert not half and not config.model.partial and config.model.group == "e2"
    assert config.model.precision is None  # "default": lax's default, as in training
    assert bench.bench_config("t2")[0].model.group == "t2"
    config, half = bench.bench_config("se2-16-partial-sep")
    assert not half and config.model.separable and config.model.num_elements == 16
    assert not bench.bench_config("se2-16-partial")[0].model.separable
    for bad in ("se2-16", "se2-x-full", "so3-8-full", "se2-8-partial-quarter", "se2-8-sep"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            bench.bench_config(bad)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--execution=eager", "unknown --execution 'eager'"),
        ("--devices=64", "--devices=64"),
        ("--precision=fp8", "unknown --precision 'fp8'"),
        ("--configs=se2-8", "bad config 'se2-8'"),
        ("--steps=0", "--steps must be a positive integer"),
    ],
)
def test_flag_errors(flag, message, capsys):
    assert bench.main(["bench", flag]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_collect_convs_counts_forward_backward_and_map():
    x = jnp.ones((3, 6, 6, 4))
    w = jnp.ones((1, 3, 3, 4, 5))

    def loss(x, w):
        return jnp.sum(conv2d(x, w, "same") ** 2)

    convs = _floor.collect_convs(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w))
    assert len(convs) == 3 and all(c["times"] == 1 for c in convs)  # forward, dx, dw
    assert [tuple(c["lhs"].shape) for c in convs][0] == (3, 6, 6, 4)
    only_w = _floor.collect_convs(jax.make_jaxpr(jax.grad(loss, argnums=1))(x, w))
    assert len(only_w) == 2  # no input gradient: like the lifting conv of a model

    # The bfloat16 conv's custom VJP computes dx even when nobody needs it: dead code the
    # floor must not count, like XLA drops it from the step.
    def loss_bf16(w):
        return jnp.sum(conv2d(x, w, "same", precision="bfloat16") ** 2)

    closed = jax.make_jaxpr(jax.grad(loss_bf16))(w)
    assert len(_floor.collect_convs(closed)) == 3
    assert len(_floor.collect_convs(_floor.live_jaxpr(closed))) == 2
    per_sample = jnp.ones((3, 3, 3, 4, 5))  # S = B: a lax.map over examples on CPU
    mapped = _floor.collect_convs(jax.make_jaxpr(lambda x: conv2d(x, per_sample, "same"))(x))
    assert [c["times"] for c in mapped] == [3] and tuple(mapped[0]["lhs"].shape) == (1, 6, 6, 4)

    # A conv under lax.cond may or may not run: refused rather than guessed.
    def branchy(x):
        zeros = jnp.zeros((3, 6, 6, 5))
        return jax.lax.cond(x.sum() > 0, lambda x: conv2d(x, w, "same"), lambda x: zeros, x)

    with pytest.raises(ValueError, match="inside a 'cond'"):
        _floor.collect_convs(jax.make_jaxpr(branchy)(x))
    # The floor function runs exactly these convs.
    floor = _floor.floor_fn(mapped)
    ops = [(jnp.ones((3, 1, 6, 6, 4)), jnp.ones((3, 3, 3, 4, 5)))]
    np.testing.assert_allclose(floor(ops)[0][:, 0], conv2d(x, per_sample, "same"), rtol=1e-6)


def test_imports_need_no_tensorflow(tmp_path):
    """The prepared GPU run (bench, tables, CLIs on npz data) must not import TensorFlow."""
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 10
    np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
    code = (
        "import sys\n"
        "import experiments.bench, experiments.tables, experiments.mnist6, experiments.cifar\n"
        "from pgcnn_jax.data import load_dataset\n"
        f"s = load_dataset('mnist6_180', batch_size=4, data='npz:{path}')\n"
        "next(iter(s.train.epoch(0)))\n"
        "tf = ('tensorflow', 'tensorflow_datasets')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in tf]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "[]"


def test_gpu_run_script_parses():
    """scripts/gpu_run.sh is valid bash (its smoke mode, PGCNN_SMOKE=1, is run by hand)."""
    proc = subprocess.run(
        ["bash", "-n", os.path.join(ROOT, "scripts", "gpu_run.sh")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
