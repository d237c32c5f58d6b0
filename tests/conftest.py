"""Strict test settings (STYLE 13): rank-promotion errors and a fresh key per test; the suite's
speed settings and the fixtures several test files share.

Speed (issue 15 item 6; the suite is mostly XLA compiling tiny programs):
- ``-n N``: the tests of a module with costly module-scoped fixtures run on one xdist worker,
  so a fixture that trains or runs a CLI is built once, not once per worker
  (``pytest_xdist_make_scheduler``).
"""

import os
import shutil
import zlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def key_seed(nodeid: str) -> int:
    """The seed of a test's key: a CRC-32 of its node id, the same in every process (unlike
    ``hash``, which Python salts per process), so a failure can be replayed."""
    return zlib.crc32(nodeid.encode("utf-8")) % (2**31)


@pytest.fixture
def key(request):
    """A PRNG key that differs per test (derived from the test's node id)."""
    return jax.random.key(key_seed(request.node.nodeid))


# ----------------------------------------------------------------------------- shared data and runs


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory):
    """The ``npz:`` spec of ``write_mnist_npz``'s fake MNIST (MNIST6-180: 16 training images)."""
    from _helpers import write_mnist_npz  # (here: test_correctness runs this file on its own)

    return write_mnist_npz(tmp_path_factory.mktemp("mnist") / "mnist.npz")


@pytest.fixture(scope="session")
def tiny_run(mnist_npz, tmp_path_factory):
    """The directory of one finished ``tiny_config`` run (2 epochs of 4 steps), trained once per
    worker: read it, do not write into it (``tiny_run_copy`` is a copy to write into)."""
    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    from _helpers import tiny_config

    from pgcnn_jax.train import train_and_evaluate

    train_and_evaluate(tiny_config(mnist_npz), workdir, progress=False)
    return workdir


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    """A copy of ``tiny_run`` in the test's own directory (for tests that add files to a run)."""
    return shutil.copytree(tiny_run, tmp_path / "tiny_run")


# ----------------------------------------------------------------------------- xdist grouping

# Modules whose module-scoped fixtures are costly (finished runs, CLI subprocess runs, compiled
# models and steps): each runs whole on one worker, so its fixtures are built once.
SHARED_FIXTURE_MODULES = frozenset(
    {
        "test_analysis.py",
        "test_cli.py",
        "test_eval_samples.py",
        "test_figures.py",
        "test_guards.py",
        "test_seed_study.py",
        "test_sharding.py",
    }
)


def _scope(nodeid: str) -> str:
    """The xdist work unit of a test: its module if listed above, else the test alone."""
    module = nodeid.split("::", 1)[0]
    return module if os.path.basename(module) in SHARED_FIXTURE_MODULES else nodeid


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (``--dist load``): xdist's ``loadscope`` over the units of ``_scope`` (the
    module units, the largest, go first, so both workers end together). (xdist's ``loadgroup``
    marks do not work with pytest 9: it renames nodes through an attribute pytest 9 ignores.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return SharedFixtureScheduling(config, log)
