"""``train_and_evaluate``: the resumable training loop (REFERENCE 5.4, DESIGN 5-6)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import sys
import time
from typing import Any

import flax
import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from pgcnn_jax.data import get_spec, load_splits
from pgcnn_jax.models import check_kernel_memory, count_params, rendered_sets
from pgcnn_jax.nn import set_gumbel_horizon, update_adaptive
from pgcnn_jax.train._checkpoint import Checkpoints
from pgcnn_jax.train._config import TrainConfig, config_differences
from pgcnn_jax.train._errors import TrainingDiverged
from pgcnn_jax.train._lock import lock_workdir
from pgcnn_jax.train._mesh import data_mesh, pad_size, prefetch, replicated
from pgcnn_jax.train._metrics import MetricsLog, MetricSums, write_json
from pgcnn_jax.train._schedule import schedule_for
from pgcnn_jax.train._state import (
    EVAL_SALT,
    TEST_SALT,
    TRAIN_SALT,
    augmentation_values,
    create_model,
    create_optimizer,
    grad_snr_by_layer,
    layer_summary,
    root_key,
)
from pgcnn_jax.train._steps import StepRunner, eval_samples_state, eval_state, example_keys

__all__ = ["EvalSums", "LoopState", "check_workdir", "evaluate", "train_and_evaluate"]

_LOG = logging.getLogger(__name__)
CONFIG_FILE, METRICS_FILE, RESULTS_FILE = "config.json", "metrics.jsonl", "results.json"
# Every READ_EVERY steps the loop reads the metrics of the steps at least READ_LAG steps old
# (long computed: the read does not wait for the device) for the progress bar and the
# divergence check.
READ_EVERY, READ_LAG = 20, 20


# The LoopState fields of model selection (saved before validating a partial epoch).
_SELECTION_FIELDS = (
    "best_val_accuracy",
    "best_val_loss",
    "best_epoch",
    "epochs_without_improvement",
)


@dataclasses.dataclass
class LoopState:
    """Where a run stands; saved as JSON with every "latest" checkpoint.

    Attributes:
      epoch: the epoch in progress (or the next to start).
      epoch_step: training steps of ``epoch`` already done.
      step: optimiser steps done in total.
      train: :class:`MetricSums` of the training steps of ``epoch`` so far.
      best_val_accuracy, best_val_loss, best_epoch: the selected model (REFERENCE 5.4).
      epochs_without_improvement: epochs since with validation accuracy below the best.
      early_stopped: patience exhausted.
      seconds: wall-clock seconds spent so far (all sessions).
      epoch_seconds: seconds spent on ``epoch`` so far.
      before_partial: set when ``max_steps`` stopped the run inside ``epoch`` and that partial
        epoch was validated (its ``metrics.jsonl`` line is marked ``"partial_epoch": true``):
        the model selection from before that pass. A partial epoch is a selection candidate
        only while no epoch has finished; a run that trains on restores this selection
        (:meth:`reopen_epoch`) and drops the line, so it computes what an uninterrupted run
        does. ``None`` otherwise.
    """

    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    train: dict[str, Any] = dataclasses.field(default_factory=lambda: MetricSums().to_dict())
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    early_stopped: bool = False
    seconds: float = 0.0
    epoch_seconds: float = 0.0
    before_partial: dict[str, Any] | None = None

    def training_done(self, config: TrainConfig) -> bool:
        return (
            self.early_stopped
            or self.epoch >= config.epochs
            or (config.max_steps is not None and self.step >= config.max_steps)
        )

    def reopen_epoch(self) -> None:
        """Undoes the model selection of a validated partial epoch (see ``before_partial``)."""
        if self.before_partial is not None:
            for name, value in self.before_partial.items():
                setattr(self, name, value)
            self.before_partial = None

    def stop_reason(self, config: TrainConfig) -> str:
        if self.early_stopped:
            return "early_stop"
        if self.epoch >= config.epochs:
            return "completed"
        return "max_steps"


def _padded(
    batch: dict[str, np.ndarray], size: int, lengths: list[int] | None = None
) -> dict[str, np.ndarray]:
    """``batch`` zero-padded to ``size`` examples with a ``mask`` of the real ones (their
    number appended to ``lengths``)."""
    n = len(batch["label"])
    if n > size:
        raise ValueError(f"a batch of {n} examples cannot be padded to {size}")
    if lengths is not None:
        lengths.append(n)
    pad = size - n
    out = {
        "image": np.concatenate([batch["image"], np.zeros((pad, *batch["image"].shape[1:]), "f4")]),
        "label": np.concatenate([batch["label"], np.zeros((pad,), batch["label"].dtype)]),
    }
    out["mask"] = (np.arange(size) < n).astype(np.float32)
    return out


class EvalSums(MetricSums):
    """:class:`MetricSums` of an evaluation (of the averaged prediction when ``samples > 1``)
    plus the correct predictions of each single pass (``pass_correct``, ``samples`` entries)."""

    def __init__(self, samples: int = 1):
        super().__init__()
        self.samples = samples
        self.pass_correct = [0] * samples
        self._passes: list[jax.Array] = []

    def add(self, metrics: dict[str, jax.Array]) -> None:
        metrics = dict(metrics)
        self._passes.append(metrics.pop("pass_correct", metrics["correct"][None]))
        super().add(metrics)

    def flush(self) -> EvalSums:
        for p in jax.device_get(self._passes):
            self.pass_correct = [a + int(b) for a, b in zip(self.pass_correct, p, strict=True)]
        self._passes = []
        super().flush()
        return self

    @property
    def accuracies(self) -> list[float]:
        """Accuracy of each single pass."""
        self.flush()
        return [c / max(self.count, 1) for c in self.pass_correct]


def evaluate(
    model,
    loader,
    key: jax.Array,
    config: TrainConfig,
    *,
    samples: int | None = None,
    mesh: Mesh | None = None,
) -> EvalSums:
    """One evaluation of ``loader`` in eval mode with ``samples`` (default
    ``config.eval_samples``) passes.

    ``samples == 1``: one stochastic pass like the reference; batch ``i`` samples its group
    elements with ``fold_in(key, i)``, shared by the batch. ``samples = K > 1``: example ``j``
    of the split (stored order) gets the key ``fold_in(key, j)`` and is evaluated on its own
    ``K`` times (:func:`~pgcnn_jax.train._steps.eval_samples_state`); the prediction is the
    mean softmax, independent of the batch size and of the other examples of a batch.

    Batches are split over the devices of ``config.devices`` (``mesh``: a
    :func:`~pgcnn_jax.train.data_mesh` instead). Every batch, a smaller last one included,
    is zero-padded to the loader's batch size rounded up to a multiple of the device count
    and masked, so one compiled evaluation step serves every split.
    """
    samples = config.eval_samples if samples is None else samples
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    mesh = data_mesh(config.devices) if mesh is None else mesh
    size = pad_size(loader.batch_size, mesh)
    model.eval()
    model_def, model_state = nnx.split(model)
    model_state = jax.device_put(model_state, replicated(mesh))  # placed once, not per batch
    kwargs = dict(weight_decay=config.weight_decay, monotonic=config.monotonic, mesh=mesh)
    sums = EvalSums(samples)
    start = 0
    lengths = []
    batches = prefetch((_padded(b, size, lengths) for b in loader.epoch(0)), mesh)
    for i, padded in enumerate(batches):
        if samples == 1:
            out = eval_state(model_def, model_state, padded, jax.random.fold_in(key, i), **kwargs)
        else:
            keys = jax.device_put(example_keys(key, start, size), padded["label"].sharding)
            out = eval_samples_state(
                model_def, model_state, padded, keys, samples=samples, **kwargs
            )
        sums.add(out)
        start += lengths[i]
    return sums.flush()


def check_workdir(config: TrainConfig, workdir: str, *, record: bool = True) -> None:
    """Refuses a ``workdir`` whose checkpoints come from a different config (``ValueError``
    naming the differing keys) and records ``config`` in ``workdir/config.json``. Without a
    checkpoint, stale ``metrics.jsonl`` / ``results.json`` are removed. With
    ``record=False`` only the check is made: nothing is written or removed.

    Before anything is written, a model whose kernel rendering cannot fit in memory is
    refused (``ValueError`` from :func:`~pgcnn_jax.models.check_kernel_memory`, with the
    element sets of :func:`~pgcnn_jax.models.rendered_sets` per forward). Raises
    :class:`~pgcnn_jax.train.WorkdirLocked` when another process trains in ``workdir``."""
    check_kernel_memory(
        config.model,
        in_features=get_spec(config.dataset).image_shape[-1],
        num_samples=rendered_sets(config.model, config.batch_size),
    )
    with lock_workdir(workdir):
        _check_workdir(config, workdir, record)


def _check_workdir(config: TrainConfig, workdir: str, record: bool) -> None:
    path = os.path.join(workdir, CONFIG_FILE)
    has_checkpoints = Checkpoints.exists(workdir)
    if has_checkpoints:
        if not os.path.exists(path):
            raise ValueError(f"workdir {workdir!r} holds checkpoints but no {CONFIG_FILE}")
        with open(path) as f:
            stored = json.load(f)
        diff = config_differences(stored, config)
        if diff:
            raise ValueError(
                f"workdir {workdir!r} holds a run with a different config (differing: "
                f"{', '.join(diff)}); use another workdir or delete this one"
            )
    if not record:
        return
    os.makedirs(workdir, exist_ok=True)
    if not has_checkpoints:
        for name in (RESULTS_FILE, METRICS_FILE):
            if os.path.exists(os.path.join(workdir, name)):
                os.remove(os.path.join(workdir, name))
    write_json(path, config.to_dict())


def _device() -> dict[str, Any]:
    d = jax.devices()[0]
    return {"kind": d.device_kind, "platform": d.platform, "count": jax.device_count()}


class _Printer:
    def __init__(self, progress: bool):
        self.progress = progress

    def __call__(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg, file=sys.stderr)
        else:
            _LOG.info(msg)


def _is_improvement(loop: LoopState, acc: float, loss: float) -> bool:
    """``>=`` on accuracy; an equal accuracy counts only with a validation loss not higher.
    A non-finite validation loss never improves."""
    if not math.isfinite(loss):
        return False
    if loop.best_val_accuracy is None or acc > loop.best_val_accuracy:
        return True
    return acc == loop.best_val_accuracy and loss <= loop.best_val_loss


def train_and_evaluate(config: TrainConfig, workdir: str, *, progress: bool = True) -> dict:
    """Trains ``config`` in ``workdir``, selects the best validation epoch, tests it.

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
    than ``data_dir``, ``max_steps``, ``checkpoint_every_steps`` and ``devices`` must match (else
    ``ValueError`` naming them).

    A run stopped by ``max_steps`` inside an epoch validates that partial epoch (a
    ``metrics.jsonl`` line marked ``"partial_epoch": true``; the best checkpoint while no epoch
    has finished); resumed, it redoes the epoch in full (see :class:`LoopState`).

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch), ``checkpoints/`` and
    ``results.json`` (strict JSON: ``null`` for a non-finite number) under ``workdir``, the
    first only once the data are loaded (a run whose data cannot be had leaves nothing
    behind); the learning-rate schedule counts epochs of the training set actually loaded
    (:meth:`TrainConfig.steps_per_epoch`). Returns the results dict. The run holds an
    exclusive lock on ``workdir`` throughout.

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
    workdir = os.fspath(workdir)
    with lock_workdir(workdir):
        return _train_and_evaluate(config, workdir, progress)


def _train_and_evaluate(config: TrainConfig, workdir: str, progress: bool) -> dict:
    check_workdir(config, workdir, record=False)
    say = _Printer(progress)
    results_path = os.path.join(workdir, RESULTS_FILE)
    loop = Checkpoints.latest_loop(workdir)
    if loop is not None and LoopState(**loop).training_done(config):
        if os.path.exists(results_path):
            say(f"{workdir}: run already finished; returning {results_path}")
            with open(results_path) as f:
                return json.load(f)

    splits = load_splits(config)
    mesh = data_mesh(config.devices, config.batch_size)
    check_workdir(config, workdir)
    steps_per_epoch = config.steps_per_epoch(splits.train.num_examples)
    model = create_model(config)
    # The temperature anneals over the run's own optimiser steps (an npz is not the paper's size).
    set_gumbel_horizon(model, config.epochs * steps_per_epoch)
    optimizer = create_optimizer(config, model, steps_per_epoch=steps_per_epoch)
    # Replicated on the mesh, as a checkpoint restores them and the step takes them.
    for node in (model, optimizer):
        nnx.update(node, jax.device_put(nnx.state(node), replicated(mesh)))
    session = _Session(
        config, workdir, splits, model, optimizer, mesh, say, progress, steps_per_epoch
    )
    try:
        return session.run()
    finally:
        session.ckpt.close()  # waits for a save in flight


class _Session:
    """One call of :func:`train_and_evaluate` after the model and data exist."""

    def __init__(
        self, config, workdir, splits, model, optimizer, mesh, say, progress, steps_per_epoch
    ):
        self.config, self.workdir, self.splits = config, workdir, splits
        self.model, self.optimizer, self.mesh = model, optimizer, mesh
        self.say, self.progress = say, progress
        self.t_session = time.perf_counter()
        self.ckpt = Checkpoints(workdir)
        restored = self.ckpt.restore_latest(model, optimizer)
        self.loop = LoopState(**restored) if restored else LoopState()
        if restored:
            say(f"resuming {workdir} at epoch {self.loop.epoch}, step {self.loop.step}")
        self.log = MetricsLog(os.path.join(workdir, METRICS_FILE))
        if not self.loop.training_done(config):
            self.loop.reopen_epoch()  # a validated partial epoch is trained to its end
        # Kept: the lines of finished epochs, and that of a validated partial one not reopened.
        self.log.truncate(self.loop.epoch + (self.loop.before_partial is not None))
        self.start_step, self.start_seconds = self.loop.step, self.loop.seconds
        # The optimiser's schedules (logged per epoch), on the loaded data's epochs.
        spe = steps_per_epoch
        self.lr = schedule_for(config, config.lr, steps_per_epoch=spe)
        self.lr_probs = schedule_for(config, config.lr_probs_or_lr, steps_per_epoch=spe)
        self.steps = StepRunner(
            model,
            optimizer,
            weight_decay=config.weight_decay,
            monotonic=config.monotonic,
            mesh=mesh,
        )
        self.checked_step = self.loop.step  # steps up to here had finite losses and states

    def check_finite(self, sums: MetricSums, *, lag: int = 0) -> None:
        """Raises :class:`TrainingDiverged` when a training step since the last check had a
        non-finite loss or state. ``lag``: check only the steps at least that old (their
        metrics are computed: no wait for the device); ``0``: every step (waits)."""
        sums.flush(keep=lag)
        done = self.loop.step - sums.pending
        if sums.flushed_finite:
            self.checked_step = max(self.checked_step, done)
            return
        raise self.diverged(
            f"the loss or a parameter became NaN/inf between steps {self.checked_step} and "
            f"{done} (epoch {self.loop.epoch})"
        )

    def diverged(self, what: str) -> TrainingDiverged:
        self.ckpt.wait()
        saved = self.ckpt.latest.latest_step()
        kept = (
            f"{self.ckpt.directory}/latest keeps the last finite state (step {saved})"
            if saved is not None
            else "no checkpoint was saved"
        )
        return TrainingDiverged(
            f"training diverged: {what}; {kept}. Lower the learning rate (lr={self.config.lr}, "
            f"lr_probs={self.config.lr_probs_or_lr}) or clip gradients (--set=gradient_clip=...)"
        )

    def elapsed(self) -> float:
        return self.start_seconds + time.perf_counter() - self.t_session

    def save_latest(self, sums: MetricSums, epoch_t0: float) -> None:
        self.check_finite(sums)  # never save a non-finite state
        self.steps.sync()
        loop = self.loop
        loop.train, loop.seconds = sums.to_dict(), self.elapsed()
        loop.epoch_seconds = time.perf_counter() - epoch_t0
        self.ckpt.save_latest(loop.step, self.model, self.optimizer, dataclasses.asdict(loop))

    def run(self) -> dict:
        config, loop = self.config, self.loop
        total = config.epochs * self.splits.train.steps_per_epoch
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        with tqdm(
            total=total,
            initial=min(loop.step, total),
            disable=not self.progress,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
            desc=os.path.basename(os.path.normpath(self.workdir)),
        ) as bar:
            while not loop.training_done(config):
                epoch_t0 = time.perf_counter() - loop.epoch_seconds
                sums = self.train_epoch(bar, epoch_t0)
                if loop.epoch_step < self.splits.train.steps_per_epoch:
                    self.end_epoch(sums, epoch_t0, partial=True)  # stopped by max_steps
                    break
                self.end_epoch(sums, epoch_t0)
        return self.finish()

    def train_epoch(self, bar, epoch_t0: float) -> MetricSums:
        """The remaining training steps of ``loop.epoch`` (up to ``max_steps``)."""
        config, loop = self.config, self.loop
        spe, every = self.splits.train.steps_per_epoch, config.checkpoint_every_steps
        train_root = root_key(config.seed, TRAIN_SALT)
        sums = MetricSums(**loop.train)
        # Batch i + 1 travels to the devices while step i runs (prefetch).
        batches = self.splits.train.epoch(loop.epoch, start_step=loop.epoch_step)
        for batch in prefetch(batches, self.mesh):
            if config.max_steps is not None and loop.step >= config.max_steps:
                break
            key = jax.random.fold_in(train_root, loop.step)
            self.adapt()
            sums.add(self.steps(batch, key))
            loop.step += 1
            loop.epoch_step += 1
            bar.update(1)
            if loop.step % READ_EVERY == 0:  # steps READ_LAG old are done: no wait
                self.check_finite(sums, lag=READ_LAG)
                if self.progress and sums.count:
                    loss = sums.loss_sum / sums.count  # the epoch's mean up to there
                    bar.set_postfix(epoch=loop.epoch, loss=f"{loss:.4f}", refresh=False)
            stopping = loop.step == config.max_steps  # end_epoch(partial=True) saves then
            if every and loop.step % every == 0 and loop.epoch_step < spe and not stopping:
                self.save_latest(sums, epoch_t0)
        return sums

    def end_epoch(self, sums: MetricSums, epoch_t0: float, *, partial: bool = False) -> None:
        """Validation, model selection, the metrics line and the epoch-end checkpoints.

        ``partial``: ``max_steps`` stopped the run inside the epoch. The line is marked
        ``"partial_epoch": true``, the pass is a selection candidate only while no epoch has
        finished, and the "latest" checkpoint stays inside the epoch, remembering the
        selection before this pass (``LoopState.before_partial``) for a resumed run."""
        config, loop, model = self.config, self.loop, self.model
        self.check_finite(sums)
        self.steps.sync()
        self.adapt()  # evaluate at the sizes of the current thetas
        epoch = loop.epoch
        if partial:
            loop.before_partial = {k: getattr(loop, k) for k in _SELECTION_FIELDS}
        eval_key = jax.random.fold_in(root_key(config.seed, EVAL_SALT), epoch)
        val = evaluate(model, self.splits.validation, eval_key, config)  # on config.devices
        if not val.finite:  # finite weights whose outputs overflow: not a usable model
            raise self.diverged(f"the validation loss of epoch {epoch} is {val.loss}")
        improved = (not partial or loop.best_epoch is None) and _is_improvement(
            loop, val.accuracy, val.loss
        )
        if improved:
            loop.best_val_accuracy, loop.best_val_loss = val.accuracy, val.loss
            loop.best_epoch, loop.epochs_without_improvement = epoch, 0
        elif val.accuracy < loop.best_val_accuracy:
            loop.epochs_without_improvement += 1
        layers = layer_summary(model)
        record = {
            "epoch": epoch,
            "step": loop.step,
            "train_loss": sums.loss,
            "train_accuracy": sums.accuracy,
            "val_loss": val.loss,
            "val_accuracy": val.accuracy,
            "val_accuracies": val.accuracies,
            "best_val_accuracy": loop.best_val_accuracy,
            "best_epoch": loop.best_epoch,
            "lr": float(self.lr(loop.step - 1)),  # the rate of the epoch's last step
            "lr_probs": float(self.lr_probs(loop.step - 1)),
            "theta": layers["theta"],
            "mirror_prob": layers["mirror_prob"],
            "elements": layers["elements"],
            "axes": layers["axes"],  # per layer: every axis's kept count, size and width
            "augmentation": augmentation_values(model),
            # per partial layer and distribution parameter: |mean| / std of its gradient over
            # the epoch's steps, and the mean gradient
            "grad_snr": grad_snr_by_layer(model, sums.grad_snr()),
            "grad_mean": grad_snr_by_layer(model, sums.grad_mean()),
            "seconds": time.perf_counter() - epoch_t0,
        }
        if partial:
            record["partial_epoch"] = True
        # Line first, checkpoints second: a kill in between leaves a line that the resumed
        # run truncates and writes again.
        self.log.append(record)
        spe = self.splits.train.steps_per_epoch
        what = f"epoch {epoch}" + (f" (partial: {loop.epoch_step} of {spe} steps)" * partial)
        self.say(
            f"{what}: train loss {sums.loss:.4f} acc {sums.accuracy:.4f} | "
            f"val loss {val.loss:.4f} acc {val.accuracy:.4f}" + (" *" if improved else "")
        )
        if improved:
            self.ckpt.save_best(epoch, model, {"epoch": epoch, "step": loop.step} | val.to_dict())
        if partial:
            self.save_latest(sums, epoch_t0)
            return
        loop.epoch, loop.epoch_step = epoch + 1, 0
        loop.early_stopped = loop.epochs_without_improvement >= config.early_stop_patience
        self.save_latest(MetricSums(), time.perf_counter())

    def adapt(self) -> None:
        """Adaptive execution (DESIGN 4): the partial layers' sizes follow their current
        thetas (one host read per step). When a size changes the runner is split again and
        the next step compiles for the new sizes (cached per tuple of sizes)."""
        if self.config.model.execution != "adaptive":
            return
        self.steps.sync()  # the modules see the runner's current arrays (no copies)
        if update_adaptive(self.model):
            self.model.train()  # an evaluation may have left the modules in eval mode
            self.steps.resplit()

    def finish(self) -> dict:
        """Restores the best weights, tests them, writes ``results.json``."""
        config, loop, model = self.config, self.loop, self.model
        self.steps.sync()
        self.ckpt.wait()  # results.json only once every checkpoint is committed
        if loop.best_epoch is not None:
            self.ckpt.restore_best(loop.best_epoch, model)
        else:
            self.say("no validation pass completed: testing the current weights")
        if config.model.execution == "adaptive":
            update_adaptive(model)  # the restored thetas' sizes (the runner is done)
        test = evaluate(model, self.splits.test, root_key(config.seed, TEST_SALT), config)
        layers = layer_summary(model)
        results = {
            "test_accuracy": test.accuracy,
            "test_accuracies": test.accuracies,
            "eval_samples": test.samples,
            "test_examples": test.count,
            "test_loss": test.loss,
            "best_val_accuracy": loop.best_val_accuracy,
            "best_val_loss": loop.best_val_loss,
            "best_epoch": loop.best_epoch,
            "epochs": loop.epoch,
            "steps": loop.step,
            "stop_reason": loop.stop_reason(config),
            "num_params": count_params(model),
            "layers": layers["layers"],
            "theta": layers["theta"],
            "mirror_prob": layers["mirror_prob"],
            "elements": layers["elements"],
            "axes": layers["axes"],  # per layer: every axis's kept count, size and width
            "augmentation": augmentation_values(model),
            "config": config.to_dict(),
            "device": _device(),
            "num_devices": self.mesh.size,
            "seconds": self.elapsed(),
            "session_start_step": self.start_step,
            "session_seconds": time.perf_counter() - self.t_session,
            "versions": {"jax": jax.__version__, "flax": flax.__version__},
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        path = os.path.join(self.workdir, RESULTS_FILE)
        write_json(path, results)
        samples = f" (mean of {test.samples} per-example samplings)" if test.samples > 1 else ""
        self.say(
            f"{results['stop_reason']}: test accuracy {test.accuracy:.4f}{samples} "
            f"(best epoch {loop.best_epoch}); results in {path}"
        )
        return results
