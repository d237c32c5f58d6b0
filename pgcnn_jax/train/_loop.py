"""``train_and_evaluate``: the resumable training loop (REFERENCE 5.4, DESIGN 5-6).

A session: open the :class:`~pgcnn_jax.train.RunDir` (lock and checks, once), load the data,
build the :class:`~pgcnn_jax.train._trainer.RunParts`, record ``config.json``, then the
epochs (:class:`~pgcnn_jax.train._trainer.Trainer` trains, :func:`_end_epoch` validates,
selects and writes the :class:`~pgcnn_jax.train.EpochRecord`) and :func:`_finish` (test,
:class:`~pgcnn_jax.train.RunResults`).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from typing import Any

import flax
import jax
from flax import nnx
from tqdm import tqdm

from pgcnn_jax.data import load_splits
from pgcnn_jax.models import count_params
from pgcnn_jax.nn import set_gumbel_horizon, update_adaptive
from pgcnn_jax.train._config import TrainConfig
from pgcnn_jax.train._evaluate import evaluate
from pgcnn_jax.train._mesh import data_mesh, replicated
from pgcnn_jax.train._metrics import MetricSums
from pgcnn_jax.train._records import EpochRecord, LayerStats, RunResults, TestScores
from pgcnn_jax.train._rundir import RESULTS_FILE, RunDir
from pgcnn_jax.train._schedule import schedule_for
from pgcnn_jax.train._selection import select
from pgcnn_jax.train._specs import EvalSettings
from pgcnn_jax.train._state import (
    EVAL_SALT,
    TEST_SALT,
    create_model,
    create_optimizer,
    grad_snr_by_layer,
    layer_summary,
    root_key,
)
from pgcnn_jax.train._trainer import RunParts, Trainer

__all__ = ["train_and_evaluate"]

_LOG = logging.getLogger(__name__)


class _Printer:
    def __init__(self, progress: bool):
        self.progress = progress

    def __call__(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg, file=sys.stderr)
        else:
            _LOG.info(msg)


def train_and_evaluate(
    config: TrainConfig, workdir: str | os.PathLike | RunDir, *, progress: bool = True
) -> dict:
    """Trains ``config`` in ``workdir``, selects the best validation epoch, tests it.

    ``workdir``: a path, or a :class:`RunDir` (opened for ``config`` by the caller, e.g. to
    refuse a busy directory before the data are loaded: its lock and checks are then not
    repeated).

    Each epoch: a training pass (``model.train()``, step keys ``fold_in(root, step)``), a
    validation pass (``model.eval()``, stochastic like the reference, or the mean of
    ``config.eval_samples`` per-example passes: :func:`evaluate`), model selection by
    validation accuracy (ties: not-higher loss) and early stopping after
    ``early_stop_patience`` epochs below the best (REFERENCE 5.4). At the end the best weights
    are restored and tested.

    The batch is split over ``config.devices`` devices (a ``data`` mesh; state replicated) and
    placed one step ahead; checkpoints are saved asynchronously. ``results.json`` records
    ``num_devices``.

    Resumable: started again with the same config in the same ``workdir`` it continues from
    the latest checkpoint (mid-epoch included) and ends with the same numbers as an
    uninterrupted run; a finished run returns its stored ``results.json``. Config keys other
    than :data:`~pgcnn_jax.train.RESUMABLE_KEYS` must match (else ``ValueError`` naming them).

    A run stopped by ``max_steps`` inside an epoch validates that partial epoch (a
    ``metrics.jsonl`` line marked ``"partial_epoch": true``; the best checkpoint while no epoch
    has finished); resumed, it redoes the epoch in full (see :class:`LoopState`).

    Writes ``config.json``, ``metrics.jsonl`` (one :class:`EpochRecord` per epoch),
    ``checkpoints/`` and ``results.json`` (the :class:`RunResults`; strict JSON: ``null`` for
    a non-finite number) under ``workdir`` (see :class:`RunDir`), the
    first only once the data are loaded (a run whose data cannot be had leaves nothing
    behind); the learning-rate schedule counts epochs of the training set actually loaded
    (:meth:`TrainConfig.steps_per_epoch`). Returns the results as a dict
    (:meth:`RunResults.to_dict`). The run holds an exclusive lock on ``workdir`` throughout,
    taken once, and checks the workdir and the model's memory once.

    Raises:
      TrainingDiverged: the loss or the model state became NaN / inf. It is detected where
        the loop reads the step metrics anyway (every 20 steps those of steps at least 20 old,
        all of them at checkpoints and epoch ends); ``checkpoints/latest`` keeps the last
        finite state, no non-finite epoch is selected.
      WorkdirLocked: another process is training in ``workdir``.
      ValueError: a bad config, a workdir of another config, or an unreadable checkpoint
        with no older intact one.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(workdir, RunDir):
        with RunDir(workdir).open(config) as run_dir:
            return _train(config, run_dir, progress)
    if workdir.config is None:
        with workdir.open(config):
            return _train(config, workdir, progress)
    if workdir.config != config:
        raise ValueError(f"{workdir!r} is open for another config than the one to train")
    return _train(config, workdir, progress)


def _train(config: TrainConfig, run_dir: RunDir, progress: bool) -> dict:
    say = _Printer(progress)
    done = run_dir.finished()
    if done is not None:
        say(f"{run_dir.path}: run already finished; returning {run_dir.file(RESULTS_FILE)}")
        return done.to_dict()
    splits = load_splits(config)
    parts = _build(config, splits)
    run_dir.record()
    with run_dir.checkpoints() as ckpt:  # closed (a save in flight waited for) at the end
        trainer = Trainer(parts, run_dir, ckpt, say)
        _epochs(trainer, progress)
        return _finish(trainer).to_dict()


def _build(config: TrainConfig, splits) -> RunParts:
    """The model and optimizer of ``config``, replicated on the run's mesh."""
    mesh = data_mesh(config.devices, config.batch_size)
    steps_per_epoch = config.steps_per_epoch(splits.train.num_examples)
    model = create_model(config)
    # The temperature anneals over the run's own optimiser steps (an npz is not the paper's size).
    set_gumbel_horizon(model, config.epochs * steps_per_epoch)
    optimizer = create_optimizer(config, model, steps_per_epoch=steps_per_epoch)
    # Replicated on the mesh, as a checkpoint restores them and the step takes them.
    for node in (model, optimizer):
        nnx.update(node, jax.device_put(nnx.state(node), replicated(mesh)))
    return RunParts(config, splits, model, optimizer, mesh, steps_per_epoch)


def _epochs(trainer: Trainer, progress: bool) -> None:
    """Trains and validates the remaining epochs (a last partial one when ``max_steps``
    stops the run inside it)."""
    config, loop, spe = trainer.config, trainer.loop, trainer.parts.splits.train.steps_per_epoch
    total = config.epochs * spe
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    with tqdm(
        total=total,
        initial=min(loop.step, total),
        disable=not progress,
        file=sys.stderr,
        unit="step",
        dynamic_ncols=True,
        desc=os.path.basename(os.path.normpath(trainer.run_dir.path)),
    ) as bar:
        while not loop.training_done(config):
            epoch_t0 = time.perf_counter() - loop.epoch_seconds
            sums = trainer.train_epoch(bar, epoch_t0)
            if loop.epoch_step < spe:
                _end_epoch(trainer, sums, epoch_t0, partial=True)  # stopped by max_steps
                break
            _end_epoch(trainer, sums, epoch_t0)


def _end_epoch(trainer: Trainer, sums: MetricSums, epoch_t0: float, *, partial=False) -> None:
    """Validation, model selection, the metrics line and the epoch-end checkpoints.

    ``partial``: ``max_steps`` stopped the run inside the epoch. The line is marked
    ``"partial_epoch": true``, the pass is a selection candidate only while no epoch has
    finished, and the "latest" checkpoint stays inside the epoch, remembering the selection
    before this pass (``LoopState.before_partial``) for a resumed run."""
    config, loop, model = trainer.config, trainer.loop, trainer.parts.model
    trainer.guard.check(sums)
    trainer.steps.sync()
    trainer.adapt()  # evaluate at the sizes of the current thetas
    epoch = loop.epoch
    eval_key = jax.random.fold_in(root_key(config.seed, EVAL_SALT), epoch)
    val = evaluate(model, trainer.parts.splits.validation, eval_key, EvalSettings.of(config))
    if not val.finite:  # finite weights whose outputs overflow: not a usable model
        raise trainer.guard.diverged(f"the validation loss of epoch {epoch} is {val.loss}")
    improved = select(loop, val.accuracy, val.loss, partial=partial)
    # Line first, checkpoints second: a kill in between leaves a line that the resumed
    # run truncates and writes again.
    trainer.run_dir.append_epoch(
        _epoch_record(trainer, sums, val, time.perf_counter() - epoch_t0, partial)
    )
    spe = trainer.parts.splits.train.steps_per_epoch
    what = f"epoch {epoch}" + (f" (partial: {loop.epoch_step} of {spe} steps)" * partial)
    trainer.say(
        f"{what}: train loss {sums.loss:.4f} acc {sums.accuracy:.4f} | "
        f"val loss {val.loss:.4f} acc {val.accuracy:.4f}" + (" *" if improved else "")
    )
    if improved:
        trainer.ckpt.save_best(epoch, model, {"epoch": epoch, "step": loop.step} | val.to_dict())
    if partial:
        trainer.save_latest(sums, epoch_t0)
        return
    loop.epoch, loop.epoch_step = epoch + 1, 0
    loop.early_stopped = loop.epochs_without_improvement >= config.early_stop_patience
    trainer.save_latest(MetricSums(), time.perf_counter())


def _epoch_record(trainer: Trainer, sums, val, seconds: float, partial: bool) -> EpochRecord:
    config, loop, model = trainer.config, trainer.loop, trainer.parts.model
    # The optimiser's schedules on the loaded data's epochs, at the epoch's last step.
    spe = trainer.parts.steps_per_epoch
    rates = [schedule_for(config, lr, steps_per_epoch=spe)(loop.step - 1)
             for lr in (config.lr, config.lr_probs_or_lr)]  # fmt: skip
    return EpochRecord(
        epoch=loop.epoch,
        step=loop.step,
        train_loss=sums.loss,
        train_accuracy=sums.accuracy,
        val_loss=val.loss,
        val_accuracy=val.accuracy,
        val_accuracies=val.accuracies,
        best_val_accuracy=loop.best_val_accuracy,
        best_epoch=loop.best_epoch,
        lr=float(rates[0]),
        lr_probs=float(rates[1]),
        stats=LayerStats.of(model),
        grad_snr=grad_snr_by_layer(model, sums.grad_snr()),
        grad_mean=grad_snr_by_layer(model, sums.grad_mean()),
        seconds=seconds,
        partial_epoch=partial,
    )


def _finish(trainer: Trainer) -> RunResults:
    """Restores the best weights, tests them, writes ``results.json``."""
    config, loop, model = trainer.config, trainer.loop, trainer.parts.model
    trainer.steps.sync()
    trainer.ckpt.wait()  # results.json only once every checkpoint is committed
    if loop.best_epoch is not None:
        trainer.ckpt.restore_best(loop.best_epoch, model)
    else:
        trainer.say("no validation pass completed: testing the current weights")
    if config.model.execution == "adaptive":
        update_adaptive(model)  # the restored thetas' sizes (the runner is done)
    key = root_key(config.seed, TEST_SALT)
    test = evaluate(model, trainer.parts.splits.test, key, EvalSettings.of(config))
    results = RunResults(
        test=TestScores.of(test),
        best_val_accuracy=loop.best_val_accuracy,
        best_val_loss=loop.best_val_loss,
        best_epoch=loop.best_epoch,
        epochs=loop.epoch,
        steps=loop.step,
        stop_reason=loop.stop_reason(config),
        num_params=count_params(model),
        layers=layer_summary(model)["layers"],
        stats=LayerStats.of(model),
        config=config.to_dict(),
        device=_device(),
        num_devices=trainer.parts.mesh.size,
        seconds=trainer.elapsed(),
        session_start_step=trainer.start_step,
        session_seconds=time.perf_counter() - trainer.t_session,
        versions={"jax": jax.__version__, "flax": flax.__version__},
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    path = trainer.run_dir.write_results(results)
    samples = f" (mean of {test.samples} per-example samplings)" if test.samples > 1 else ""
    trainer.say(
        f"{results.stop_reason}: test accuracy {test.accuracy:.4f}{samples} "
        f"(best epoch {loop.best_epoch}); results in {path}"
    )
    return results


def _device() -> dict[str, Any]:
    d = jax.devices()[0]
    return {"kind": d.device_kind, "platform": d.platform, "count": jax.device_count()}
