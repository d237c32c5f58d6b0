"""A new user's first runs (issue 7, section 4): offline TFDS fails fast and leaves nothing, every
CLI's --help lists the shared flags, the lr schedule counts epochs of the loaded data, a run
shorter than one epoch records it, and what a run prints first."""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    ROOT,
    TINY_FLAGS,
    read_metrics,
    run_in_process,
    tiny_config,
    write_mnist_npz,
)
from absl import flags
from flax import nnx

from experiments import _cli, cifar, mnist6
from pgcnn_jax.train import (
    EvalSums,
    _loop,
    learning_rate_schedule,
    load_run,
    param_labels,
    train_and_evaluate,
)
from pgcnn_jax.train._checkpoint import Checkpoints

FLAGS = flags.FLAGS


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    """Fake plain MNIST with 8 training sixes: MNIST6-180 has 16 training images."""
    return write_mnist_npz(tmp_path_factory.mktemp("data") / "mnist.npz")


# ----------------------------------------------------------------------------- 1. offline


def _no_dns(host, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


class _UnreachableSocket(socket.socket):
    def connect(self, address):
        raise TimeoutError("timed out")


def _fake_address(host, port, *args, **kwargs):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]


@pytest.mark.parametrize("failure", ["dns", "connect"])
def test_offline_tfds_run_fails_fast_and_leaves_nothing(failure, tmp_path, monkeypatch, capsys):
    import tensorflow_datasets as tfds

    def no_download(self, *args, **kwargs):
        raise AssertionError("download_and_prepare called although the host is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    monkeypatch.setattr(socket, "getaddrinfo", _no_dns if failure == "dns" else _fake_address)
    monkeypatch.setattr(socket, "socket", _UnreachableSocket)
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    t0 = time.monotonic()
    code = run_in_process(cifar, "--group=se2", f"--workdir={workdir}", f"--data_dir={data_dir}")
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: could not download / prepare 'cifar10'"), err
    expected = "cannot resolve www.cs.toronto.edu" if failure == "dns" else "cannot connect"
    assert expected in err[-1] and "--data=npz:PATH" in err[-1]
    # A run that never started leaves no run directory (no config.json) and no downloads.
    assert not workdir.exists()
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


def test_probe_times_out_on_a_silent_resolver(monkeypatch):
    from pgcnn_jax.data import _probe

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(30))
    t0 = time.monotonic()
    with pytest.raises(OSError, match=r"cannot resolve host\.example: no answer within 0\.2 s"):
        _probe.probe_hosts(["https://host.example/file.zip"], timeout=0.2)
    assert time.monotonic() - t0 < 5


def test_probe_goes_through_the_proxy_and_accepts_a_listening_host(monkeypatch):
    from pgcnn_jax.data import _probe

    server = socket.socket()  # a local listener: no network involved
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        port = server.getsockname()[1]
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("no_proxy", "")
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        # host.invalid is never resolved: the connection goes to the proxy.
        _probe.probe_hosts(["https://host.invalid/a.tar.gz"], timeout=2.0)
        monkeypatch.setenv("https_proxy", "http://127.0.0.1:1")  # nothing listens there
        with pytest.raises(OSError, match="cannot connect to 127.0.0.1:1"):
            _probe.probe_hosts(["https://host.invalid/a.tar.gz"], timeout=2.0)
    finally:
        server.close()


def test_nothing_to_probe_when_the_source_is_local(tmp_path):
    from pgcnn_jax.data import _probe
    from pgcnn_jax.data._rotmnist import URL, ZIP_NAME, RotatedMnist

    builder = RotatedMnist(data_dir=str(tmp_path))
    assert _probe.pending_downloads(builder) == [URL]
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / ZIP_NAME).write_bytes(b"")
    assert _probe.pending_downloads(builder) == []


def test_failed_download_leaves_no_partial_files(tmp_path):
    from pgcnn_jax.data import _probe

    class Builder:  # where TFDS puts what it downloads
        name = "cifar10"
        data_dir_root = str(tmp_path)

    kept = tmp_path / "downloads" / "kept.tmp.0123456789abcdef0123456789abcdef"
    kept.mkdir(parents=True)
    before = _probe.snapshot(Builder)
    partial = tmp_path / "downloads" / "cifar10" / "x.tar.gz.tmp.ffffffffffffffffffffffffffffffff"
    partial.mkdir(parents=True)
    (partial / "x.tar.gz").write_bytes(b"half")
    (tmp_path / "downloads" / "extracted").mkdir()
    (tmp_path / "cifar10").mkdir()
    _probe.remove_partial_downloads(Builder, before)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["downloads", kept.name]


# ----------------------------------------------------------------------------- 2. --help


def test_every_cli_help_lists_the_shared_flags():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["JAX_PLATFORMS"] = "cpu"
    procs = {
        cli: subprocess.Popen(
            [sys.executable, "-m", f"experiments.{cli}", "--help"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cli in ("cifar", "mnist6", "rotmnist", "pcam")
    }
    outs = {cli: proc.communicate(timeout=120)[0] for cli, proc in procs.items()}
    for cli, out in outs.items():
        assert procs[cli].returncode in (0, 1) and "Traceback" not in out, out  # absl: 1
        for flag in ("--group", "--elems", "--data:", "--max_steps", "--preset", "--workdir"):
            assert f"  {flag}" in out, (cli, flag)
        assert "--[no]sample_per_batch_element" in out and "--[no]partial" in out, cli
        assert "--[no]separable" in out, cli
    assert "  --dataset" in outs["cifar"] and "  --task" in outs["mnist6"]  # their own, too


# ----------------------------------------------------------------------------- 3. schedule


def test_lr_schedule_counts_epochs_of_the_loaded_data(mnist_data, tmp_path, monkeypatch):
    """16 training images, batch 4: 4 steps per epoch (not ceil(11836 / 4) = 2959)."""
    config = tiny_config(mnist_data, epochs=2, warmup_epochs=0, scheduler="cosine", max_steps=4)
    used = {}
    real = _loop.create_optimizer

    def spy(config, model, **kw):
        used["optimizer"] = optimizer = real(config, model, **kw)
        used["model"] = model
        return optimizer

    monkeypatch.setattr(_loop, "create_optimizer", spy)
    train_and_evaluate(config, tmp_path, progress=False)
    expected = learning_rate_schedule(1e-2, warmup_steps=0, decay_steps=8, end_value=1e-6)
    end_of_epoch = 1e-6 + (1e-2 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 3 / 8))
    assert float(expected(3)) == pytest.approx(end_of_epoch, rel=1e-6)
    (line,) = read_metrics(tmp_path)
    assert line["epoch"] == 0 and "partial_epoch" not in line
    assert line["lr"] == pytest.approx(end_of_epoch, rel=1e-6)  # the epoch's last step

    # The optimizer applies that rate: Adam's step under a constant gradient is -lr(step).
    tx, model = used["optimizer"].tx, used["model"]
    params = nnx.state(model, nnx.Param)
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for _ in range(4):
        updates, state = tx.update(grads, state, params)
    labels = jax.tree.leaves(param_labels(model))
    main = [u for u, lab in zip(jax.tree.leaves(updates), labels, strict=True) if lab == "main"]
    np.testing.assert_allclose(np.asarray(main[0]).ravel()[0], -end_of_epoch, rtol=1e-5)
    assert config.steps_per_nominal_epoch == 2959 and config.steps_per_epoch(16) == 4


# ----------------------------------------------------------------------------- 4. partial epoch


def test_run_shorter_than_an_epoch_records_it(mnist_data, tmp_path, caplog):
    results = train_and_evaluate(tiny_config(mnist_data, max_steps=2), tmp_path, progress=False)
    (line,) = read_metrics(tmp_path)
    assert line["partial_epoch"] is True and (line["epoch"], line["step"]) == (0, 2)
    assert results["best_epoch"] == 0 and results["stop_reason"] == "max_steps"
    assert results["best_val_accuracy"] == line["val_accuracy"]
    assert os.listdir(tmp_path / "checkpoints" / "best") == ["0"]
    model, _ = load_run(tmp_path)  # figures find a best checkpoint
    latest, _ = load_run(tmp_path, which="latest")
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(latest))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # Reading the loop state back logs no orbax read-only warnings (resume printed three).
    with caplog.at_level(logging.WARNING):
        assert Checkpoints.latest_loop(str(tmp_path))["before_partial"]["best_epoch"] is None
    assert not [r for r in caplog.records if "read" in r.getMessage().lower()], caplog.text

    # Without any best checkpoint the hint names the flag.
    empty = tmp_path / "copy"
    empty.mkdir()
    (empty / "config.json").write_text((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="--which=latest"):
        load_run(empty)


def test_resumed_partial_epoch_is_trained_and_selected_again(mnist_data, tmp_path, monkeypatch):
    """The partial pass's selection is provisional: a resumed run that finishes the epoch
    selects as an uninterrupted one would, even against a better partial score."""
    accuracy = {"value": 1.0}

    def fake_evaluate(model, loader, key, config):
        n, sums = 4, EvalSums()
        correct = round(accuracy["value"] * n)
        sums.add({"loss_sum": 0.5 * n, "correct": np.int32(correct), "count": np.int32(n)})
        return sums

    monkeypatch.setattr(_loop, "evaluate", fake_evaluate)
    config = tiny_config(mnist_data, epochs=1)
    first = train_and_evaluate(config.replace(max_steps=2), tmp_path, progress=False)
    assert (first["best_epoch"], first["best_val_accuracy"]) == (0, 1.0)
    accuracy["value"] = 0.5
    last = train_and_evaluate(config, tmp_path, progress=False)
    assert (last["best_epoch"], last["best_val_accuracy"], last["steps"]) == (0, 0.5, 4)
    lines = read_metrics(tmp_path)
    assert [(r["epoch"], r["step"], "partial_epoch" in r) for r in lines] == [(0, 4, False)]
    best, _ = load_run(tmp_path)  # the end of epoch 0, not the partial pass at step 2
    latest, _ = load_run(tmp_path, which="latest")
    for a, b in zip(jax.tree.leaves(nnx.state(best)), jax.tree.leaves(nnx.state(latest))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- 5. first lines


def test_first_line_says_what_is_downloaded(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    workdir = tmp_path / "run"
    args = (*TINY_FLAGS, f"--data=npz:{missing}", f"--workdir={workdir}", "--task=180")
    assert run_in_process(mnist6, *args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("[pgcnn] mnist6_180: local npz") and "npz file not found" in err[-1]
    # The preset samples per batch element: on CPU the run says so and names the flag.
    notes = [line for line in err if "per batch element" in line]
    assert len(notes) == (jax.default_backend() == "cpu")
    assert all("--nosample_per_batch_element" in line for line in notes)
    assert not workdir.exists()  # the data could not be loaded: no config.json

    assert run_in_process(mnist6, *args, "--nosample_per_batch_element") == 1
    assert "per batch element" not in capsys.readouterr().err
    args = (f"--data=npz:{missing}", f"--workdir={workdir}", "--noprogress", "--group=t2")
    assert run_in_process(cifar, *args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("[pgcnn] cifar10: local npz") and "implies" in err[1]
    assert "(~170 MB download)" in _cli.describe_source("cifar10")  # 162.17 MiB
