"""One train step sharded over a device mesh (issue 8, items 2 and 3): the batch split along
``data``, state replicated, BatchNorm statistics of the global batch; padded evaluation;
``--devices``; batches prefetched one step ahead; lagged metric reads.

conftest.py gives this process two CPU devices (``--xla_force_host_platform_device_count``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from flax import nnx

from pgcnn_jax.data import ArrayLoader
from pgcnn_jax.models import ModelConfig
from pgcnn_jax.train import (
    EvalSettings,
    MetricSums,
    StepRunner,
    TrainConfig,
    check_devices,
    create_model,
    data_mesh,
    evaluate,
    trace_counts,
    train_step,
)

FLAGS = flags.FLAGS

# A tiny partial SE2 CKResNet with BatchNorm (the default norm) and random sampling.
TINY = ModelConfig(
    width=4,
    kernel_hidden=4,
    num_elements=2,
    kernel_size=3,
    num_blocks=1,
    block_width_factors=(1.0, 1),
    pool_blocks=(1,),
    norm="batch",
)
CONFIG = TrainConfig(dataset="mnist6_180", model=TINY, batch_size=4, lr=1e-2, scheduler="constant")


# One transformation object: a static attribute of the optimizer graph, so the tests share
# compiled steps.
SGD = optax.sgd(1e-2)


@pytest.fixture(scope="module", autouse=True)
def two_devices():
    if jax.device_count() < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2 (conftest.py)")


def _batch(seed: int, n: int = 4) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(jax.random.key(seed))
    image = jax.random.normal(k1, (n, 8, 8, 1))
    # The two halves (the two devices' shares) differ in scale: per-device BatchNorm
    # statistics would differ from the global ones.
    image = image * jnp.where(jnp.arange(n) < n // 2, 1.0, 4.0)[:, None, None, None]
    return {"image": image, "label": jax.random.randint(k2, (n,), 0, 2)}


def _pure(node) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(node)))


def _run_steps(devices: int, steps: int = 2):
    model = create_model(CONFIG)
    model.train()
    # SGD: updates linear in the gradients. (Adam's first steps are about lr * sign(g), which
    # turns the float noise of a zero gradient, e.g. a bias before BatchNorm, into +-lr.)
    optimizer = nnx.Optimizer(model, SGD, wrt=nnx.Param)
    mesh = data_mesh(devices)
    losses = []
    for i in range(steps):
        out = train_step(model, optimizer, _batch(i), jax.random.key(10 + i), mesh=mesh)
        losses.append(float(out["loss_sum"]) / int(out["count"]))
    return model, optimizer, losses


def test_train_step_on_two_devices_matches_one():
    model1, opt1, losses1 = _run_steps(1)
    model2, opt2, losses2 = _run_steps(2)
    np.testing.assert_allclose(losses2, losses1, rtol=1e-5, atol=1e-6)
    # Parameters and BatchNorm running statistics agree to float tolerance.
    leaves1 = jax.tree_util.tree_flatten_with_path(_pure(model1))[0]
    for (path, x), y in zip(leaves1, jax.tree.leaves(_pure(model2)), strict=True):
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5, err_msg=str(path))
    assert int(opt1.step[...]) == int(opt2.step[...]) == 2
    # The state is replicated over both devices; the batch was split between them.
    leaf = jax.tree.leaves(nnx.state(model2, nnx.Param))[0]
    assert leaf.sharding.mesh.size == 2 and leaf.sharding.is_fully_replicated
    running = [
        np.asarray(v) for v in jax.tree.leaves(nnx.state(model2, nnx.BatchStat)) if np.size(v) > 1
    ]
    assert running, "the model has BatchNorm running statistics"


def test_batchnorm_statistics_are_those_of_the_global_batch():
    """Negative control for the test above: the two halves of the batch alone give other
    statistics, so equal results on two devices mean the mean and variance are global."""
    stats = []
    forward = nnx.jit(lambda m, x: m(x, rngs=nnx.Rngs(sample=1, dropout=2)))
    image = _batch(0)["image"]
    for part in (image, image[:2]):
        model = create_model(CONFIG)
        model.train()
        forward(model, part)
        stats.append(jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    assert any(
        np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
        for a, b in zip(*stats, strict=True)
        if np.size(a) > 1
    )


def _loader(n: int, batch_size: int) -> ArrayLoader:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    return ArrayLoader(images, labels, mean=(0.5,), std=(0.25,), batch_size=batch_size, train=False)


@pytest.mark.parametrize("samples", [1, 2])
def test_evaluation_pads_batches_to_a_multiple_of_the_devices(samples):
    model = create_model(CONFIG)
    loader = _loader(9, 5)  # batches of 5 and 4 examples: padded to 6 on two devices
    key = jax.random.key(4)
    settings = EvalSettings.of(CONFIG, samples=samples)
    one = evaluate(model, loader, key, settings, mesh=data_mesh(1))
    two = evaluate(model, loader, key, settings, mesh=data_mesh(2))
    assert one.count == two.count == 9  # the padding rows are not counted
    assert two.correct == one.correct and two.pass_correct == one.pass_correct
    assert two.loss_sum == pytest.approx(one.loss_sum, rel=1e-5)


def test_devices_are_checked():
    assert check_devices(None) == jax.device_count()
    assert data_mesh(1).size == 1 and data_mesh().axis_names == ("data",)
    with pytest.raises(ValueError, match=r"devices=3 but only 2 cpu device\(s\)"):
        check_devices(3)
    with pytest.raises(ValueError, match="batch_size=5 is not divisible by devices=2"):
        data_mesh(None, batch_size=5)  # the default: every device
    with pytest.raises(ValueError, match="batch_size=5 is not divisible by devices=2"):
        TrainConfig(dataset="mnist6_180", batch_size=5, devices=2)
    with pytest.raises(ValueError, match="devices must be None or a positive int"):
        TrainConfig(dataset="mnist6_180", devices=0)
    # A run may resume on another device count.
    assert "devices" in __import__("pgcnn_jax.train", fromlist=["x"]).RESUMABLE_KEYS


def test_cli_devices_flag():
    from experiments import _cli

    def resolve(*args):
        FLAGS.unparse_flags()
        try:
            FLAGS(["prog", *args])
            return _cli.resolve(("cifar10",), None)[1]
        finally:
            FLAGS.unparse_flags()

    assert resolve("--devices=1").devices == 1
    assert resolve().devices is None
    with pytest.raises(ValueError, match="devices=4 but only 2 cpu device"):
        resolve("--devices=4")
    with pytest.raises(ValueError, match="batch_size=63 is not divisible by devices=2"):
        resolve("--batch_size=63")


def test_runner_recompiles_only_for_a_new_graph():
    """The runner's step is cached per graph: after a change of a static attribute
    (sync, change, resplit) it compiles once, and going back reuses the first program."""
    model = create_model(CONFIG)
    optimizer = nnx.Optimizer(model, SGD, wrt=nnx.Param)
    runner = StepRunner(model, optimizer, mesh=data_mesh(2))
    runner(_batch(0), jax.random.key(0))
    base = trace_counts()["train_step"]
    runner(_batch(1), jax.random.key(1))
    assert trace_counts()["train_step"] == base
    runner.sync()
    model.eval()  # the modules' static flags change: another graph
    runner.resplit()
    runner(_batch(2), jax.random.key(2))
    assert trace_counts()["train_step"] == base + 1
    runner.sync()
    model.train()
    runner.resplit()
    runner(_batch(3), jax.random.key(3))
    assert trace_counts()["train_step"] == base + 1
    runner.sync()
    assert int(optimizer.step[...]) == 4


def test_prefetch_places_the_next_batch_before_handing_out_the_current():
    from pgcnn_jax.train._mesh import prefetch

    mesh = data_mesh(2)
    drawn = []

    def batches():
        for i in range(3):
            drawn.append(i)
            yield {"image": np.full((4, 2), i, np.float32), "label": np.arange(4)}

    seen = []
    for i, batch in enumerate(prefetch(batches(), mesh)):
        seen.append(int(batch["image"][0, 0]))
        assert len(drawn) == min(i + 2, 3)  # batch i + 1 is already on its way
        assert batch["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert seen == [0, 1, 2]
    with pytest.raises(ValueError, match="3 rows, not a multiple of the 2 devices"):
        next(prefetch(iter([{"label": np.arange(3)}]), mesh))


def test_metric_sums_read_lagged_steps_without_the_newest():
    sums = MetricSums()
    for i in range(5):
        loss = jnp.float32(np.nan if i == 4 else 1.0)
        sums.add({"loss_sum": loss, "correct": jnp.int32(1), "count": jnp.int32(1)})
    sums.flush(keep=2)
    assert (sums.count, sums.pending, sums.flushed_finite) == (3, 2, True)
    assert not sums.finite and sums.count == 5 and sums.pending == 0


def test_async_checkpoint_keeps_the_saved_state_while_training_goes_on(tmp_path):
    """A save in flight owns a copy of the state: the next train step donates the live
    buffers, and the checkpoint still holds the values of the moment of the save."""
    from pgcnn_jax.train import Checkpoints

    def fresh():
        model = create_model(CONFIG)
        model.train()
        return model, nnx.Optimizer(model, SGD, wrt=nnx.Param)

    model, optimizer = fresh()
    saved = _pure(model)
    ckpt = Checkpoints(str(tmp_path))
    try:
        ckpt.save_latest(1, model, optimizer, {"best_epoch": None})
        train_step(model, optimizer, _batch(0), jax.random.key(0), mesh=data_mesh(1))
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(_pure(model)), strict=True)
        )
        other, other_opt = fresh()
        assert ckpt.restore_latest(other, other_opt) == {"best_epoch": None}  # waits first
    finally:
        ckpt.close()
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(_pure(other)), strict=True):
        np.testing.assert_array_equal(b, a)
    assert sorted(os.listdir(tmp_path / "checkpoints" / "latest")) == ["1"]
