"""What several test files share: the tiny model and CLI flags, fake npz data sets, the tiny
training config, in-process CLI runs, subprocess environments and run-file readers.

Imported as ``from _helpers import ...``: ``tests/`` has no ``__init__.py``, so pytest's default
(``prepend``) import mode puts this folder on ``sys.path`` for the test files.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import flags
from flax.nnx import Rngs

import pgcnn_jax as pg
from pgcnn_jax.models import ModelConfig
from pgcnn_jax.train import TrainConfig

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny partial SE2 CKResNet (one block): the same shapes everywhere, so jit caches are shared.
TINY = ModelConfig(
    width=4,
    kernel_hidden=8,
    num_elements=4,
    kernel_size=3,
    num_blocks=1,
    block_width_factors=(1.0, 1),
    pool_blocks=(1,),
)
# Narrower, with a wider second conv: the adaptive and per-example tests' model.
TINY_W3 = TINY.replace(width=3, kernel_hidden=6, block_width_factors=(2.0, 1))
# The model tests' TINY: two blocks with a pool between them, and a three-block G-CNN.
MODEL_TINY = TINY.replace(num_blocks=2, block_width_factors=(1, 1, 2, 1))
MODEL_TINY_GCNN = MODEL_TINY.replace(
    model="gcnn",
    num_blocks=3,
    block_width_factors=(1, 1, 2, 2),
    pool_blocks=(2,),
    dropout=0.3,
    dropout_blocks=(2, 3),
)
MODEL_RNGS = dict(sample=1, dropout=2)  # the streams of a model call: nnx.Rngs(**MODEL_RNGS)
# Flags that shrink any CKResNet preset to TINY (a model that compiles in seconds).
TINY_FLAGS = (
    "--width=4",
    "--kernel_hidden=8",
    "--elems=4",
    "--kernel_size=3",
    "--set=num_blocks=1",
    "--set=block_width_factors=[1,1]",
    "--set=pool_blocks=[1]",
    "--batch_size=4",
    "--noprogress",
)


def write_npz(path, *, n_train, n_test, shape, num_classes, labels=None, seed=0, **extra):
    """A fake data set of uint8 images (``x_train``, ``y_train``, ``x_test``, ``y_test`` plus
    ``extra`` arrays) with random labels or the given ``(y_train, y_test)``; returns the
    ``npz:`` data spec."""
    rng = np.random.default_rng(seed)
    arrays = dict(
        x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        y_train=rng.integers(0, num_classes, n_train) if labels is None else labels[0],
        x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        y_test=rng.integers(0, num_classes, n_test) if labels is None else labels[1],
    )
    np.savez(path, **(arrays | extra))
    return f"npz:{path}"


def write_mnist_npz(path, num_train_sixes=8, num_test_sixes=4, seed=0):
    """Fake plain MNIST with some sixes; MNIST6 keeps the sixes and doubles them."""
    y_train = np.array([6] * num_train_sixes + [1, 2, 3, 4])
    y_test = np.array([6] * num_test_sixes + [0, 7])
    return write_npz(
        path,
        n_train=len(y_train),
        n_test=len(y_test),
        shape=(28, 28),
        num_classes=10,
        labels=(y_train, y_test),
        seed=seed,
    )


def build(config, num_classes=5, in_features=3, seed=0):
    """``build_model(config, ...)`` with the model tests' defaults (5 classes, 3 channels)."""
    from pgcnn_jax.models import build_model

    return build_model(config, num_classes=num_classes, in_features=in_features, rngs=Rngs(seed))


def tiny_config(data, **kw):
    """A short MNIST6-180 run of the TINY model on ``data``, with ``kw`` overriding."""
    base = dict(
        dataset="mnist6_180",
        data=data,
        model=TINY,
        epochs=2,
        batch_size=4,
        lr=1e-2,
        scheduler="constant",
        checkpoint_every_steps=3,
    )
    return TrainConfig(**(base | kw))


def run_in_process(module, *args: str) -> int:
    """Runs ``module.main`` as ``python -m`` would, in this process; returns the exit code."""
    FLAGS.unparse_flags()
    try:
        argv = FLAGS([module.__name__, *args])
        module.main(argv)
        return 0
    except SystemExit as exit_:
        return exit_.code
    finally:
        FLAGS.unparse_flags()


def subprocess_env(cache_dir):
    """The environment of a ``python -m experiments...`` subprocess: this checkout's code on
    the CPU, sharing the persistent compilation cache in ``cache_dir``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    # Later processes load the executables the first one compiled.
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_metrics(workdir):
    """The records of ``workdir/metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def lift_relu_conv(group, num_elements: int):
    """A lifting conv, ReLU, a group conv (5x5, deterministic grid, fixed weights): the
    two-layer net the exact-equivariance tests of a group run."""
    lift = pg.nn.LiftingConv(
        2, 3, group=group, num_elements=num_elements, kernel_size=5, sampling="deterministic",
        rngs=Rngs(0),
    )  # fmt: skip
    conv = pg.nn.GroupConv(
        3, 2, group=group, num_elements=num_elements, kernel_size=5, sampling="deterministic",
        rngs=Rngs(1),
    )  # fmt: skip
    return lambda x: conv(lift(x).replace_values(jax.nn.relu(lift(x).values)))
