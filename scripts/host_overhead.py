"""The fraction of a training run's wall clock spent outside the jitted train step.

    PYTHONPATH=. python scripts/host_overhead.py --data=npz:data/mnist5k.npz --epochs=4

Trains the Figure-4 preset (``fig4``, or ``--preset``) with ``train_and_evaluate`` on the given
data and times every training pass (``jax.block_until_ready`` of the state at the end of the
pass only, so the timing sees what the loop itself waits for). Right after each pass it runs
the same compiled step as many times back to back on one batch already on the devices (on a
model of its own; fastest of ``--repeats``), so both timings see the same load on a shared
machine. The host overhead is ``1 - sum(steps * step_alone) / sum(pass wall clock)``: data
loading, transfers, metric reads, checkpoints and Python between the steps that the device
does not hide. The step is compiled before the run, so no pass includes compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np

from experiments.configs import PRESETS
from pgcnn_jax.data import load_splits
from pgcnn_jax.nn import set_gumbel_horizon
from pgcnn_jax.train import (
    Objective,
    StepRunner,
    _trainer,
    create_model,
    create_optimizer,
    train_and_evaluate,
)
from pgcnn_jax.train._mesh import data_mesh, put_batch


def _runner(config) -> tuple[StepRunner, dict, int]:
    """A runner of the run's compiled step on a model of its own, one placed batch, and the
    steps per epoch."""
    splits = load_splits(config)
    model = create_model(config)
    spe = config.steps_per_epoch(splits.train.num_examples)
    set_gumbel_horizon(model, config.epochs * spe)
    optimizer = create_optimizer(config, model, steps_per_epoch=spe)
    mesh = data_mesh(config.devices, config.batch_size)
    runner = StepRunner(model, optimizer, objective=Objective.of(config), mesh=mesh)
    batch = put_batch(next(iter(splits.train.epoch(0))), mesh)
    jax.block_until_ready(runner(batch, jax.random.key(0)))  # compiles the step
    return runner, batch, splits.train.steps_per_epoch


def step_seconds(runner: StepRunner, batch: dict, steps: int, repeats: int) -> float:
    """Fastest per-step time of ``steps`` back-to-back steps on one placed batch."""
    keys = [jax.random.fold_in(jax.random.key(1), i) for i in range(steps)]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for key in keys:
            runner(batch, key)
        jax.block_until_ready(runner.state)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def _timed_passes(passes: list[dict], runner: StepRunner, batch: dict, repeats: int):
    """Wraps ``Trainer.train_epoch``: records the wall clock and steps of every pass, and
    right after it the step alone (the same load on a shared machine)."""
    original = _trainer.Trainer.train_epoch

    def train_epoch(self, bar, epoch_t0):
        step0, t0 = self.loop.step, time.perf_counter()
        sums = original(self, bar, epoch_t0)
        jax.block_until_ready(self.steps.state)
        seconds = time.perf_counter() - t0
        steps = self.loop.step - step0
        alone = step_seconds(runner, batch, steps, repeats)
        passes.append(
            {
                "steps": steps,
                "seconds": seconds,
                "step_alone_ms": 1e3 * alone,
                "outside_fraction": 1.0 - steps * alone / seconds,
            }
        )
        return sums

    _trainer.Trainer.train_epoch = train_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="npz:PATH of an MNIST-style npz")
    parser.add_argument("--preset", default="fig4")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()

    config = PRESETS[args.preset].config
    config = config.replace(
        data=args.data,
        epochs=args.epochs,
        devices=args.devices,
        batch_size=args.batch_size or config.batch_size,
    )
    runner, batch, spe = _runner(config)
    passes: list[dict] = []
    _timed_passes(passes, runner, batch, args.repeats)
    workdir = args.workdir or tempfile.mkdtemp(prefix="host_overhead_")
    t0 = time.perf_counter()
    results = train_and_evaluate(config, os.path.join(workdir, "run"), progress=False)
    run_seconds = time.perf_counter() - t0

    steps = sum(p["steps"] for p in passes)
    wall = sum(p["seconds"] for p in passes)
    alone = sum(p["steps"] * p["step_alone_ms"] / 1e3 for p in passes)
    outside = 1.0 - alone / wall
    per_step = alone / steps
    report = {
        "preset": args.preset,
        "data": args.data,
        "epochs": args.epochs,
        "batch_size": config.batch_size,
        "num_devices": results["num_devices"],
        "device": jax.devices()[0].device_kind,
        "passes": passes,
        "timed_steps": steps,
        "timed_pass_seconds": wall,
        "step_ms": 1e3 * per_step,
        "outside_step_fraction": outside,
        "run_seconds": run_seconds,
    }
    print(json.dumps(report, indent=1))
    print(
        f"host overhead: {100 * outside:.1f} % of the training passes' wall clock is outside "
        f"the jitted step ({steps} steps in {wall:.2f} s; step alone {1e3 * per_step:.1f} ms; "
        f"{args.epochs} epochs, batch {config.batch_size}, "
        f"{results['num_devices']} device(s))"
    )
    np.testing.assert_(np.isfinite(outside))


if __name__ == "__main__":
    main()
