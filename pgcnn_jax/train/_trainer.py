"""The training steps of one session of :func:`~pgcnn_jax.train.train_and_evaluate`: resume,
the steps of an epoch, the divergence guard and the "latest" checkpoints (DESIGN 5-6)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from pgcnn_jax.nn import update_adaptive
from pgcnn_jax.train._checkpoint import Checkpoints
from pgcnn_jax.train._config import TrainConfig
from pgcnn_jax.train._errors import TrainingDiverged
from pgcnn_jax.train._mesh import prefetch
from pgcnn_jax.train._metrics import MetricSums
from pgcnn_jax.train._rundir import RunDir
from pgcnn_jax.train._selection import LoopState
from pgcnn_jax.train._specs import Objective
from pgcnn_jax.train._state import TRAIN_SALT, root_key
from pgcnn_jax.train._steps import StepRunner

__all__ = ["READ_EVERY", "READ_LAG", "RunParts", "Trainer"]

# Every READ_EVERY steps the loop reads the metrics of the steps at least READ_LAG steps old
# (long computed: the read does not wait for the device) for the progress bar and the
# divergence check.
READ_EVERY, READ_LAG = 20, 20


@dataclasses.dataclass(frozen=True)
class RunParts:
    """What a session trains, built once the data are loaded: the model and optimizer
    (replicated on ``mesh``) and ``steps_per_epoch``, the schedule's steps per epoch of the
    training set actually loaded."""

    config: TrainConfig
    splits: Any
    model: nnx.Module
    optimizer: nnx.Optimizer
    mesh: Mesh
    steps_per_epoch: int


class DivergenceGuard:
    """Raises :class:`TrainingDiverged` at the first non-finite loss or state it reads."""

    def __init__(self, config: TrainConfig, ckpt: Checkpoints, loop: LoopState):
        self.config, self.ckpt, self.loop = config, ckpt, loop
        self.checked_step = loop.step  # steps up to here had finite losses and states

    def check(self, sums: MetricSums, *, lag: int = 0) -> None:
        """Raises when a training step since the last check had a non-finite loss or state.
        ``lag``: check only the steps at least that old (their metrics are computed: no wait
        for the device); ``0``: every step (waits)."""
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


class Trainer:
    """The training side of a session: restores the newest readable "latest" checkpoint of
    ``run_dir`` into ``parts`` (``loop`` then says where the run stands), runs training
    steps and saves "latest" checkpoints."""

    def __init__(self, parts: RunParts, run_dir: RunDir, ckpt: Checkpoints, say):
        self.parts, self.run_dir, self.ckpt, self.say = parts, run_dir, ckpt, say
        config = self.config = parts.config
        self.t_session = time.perf_counter()
        restored = ckpt.restore_latest(parts.model, parts.optimizer)
        self.loop = LoopState(**restored) if restored else LoopState()
        if restored:
            say(f"resuming {run_dir.path} at epoch {self.loop.epoch}, step {self.loop.step}")
        if not self.loop.training_done(config):
            self.loop.reopen_epoch()  # a validated partial epoch is trained to its end
        # Kept: the lines of finished epochs, and that of a validated partial one not reopened.
        run_dir.keep_epochs(self.loop.epoch + (self.loop.before_partial is not None))
        self.start_step, self.start_seconds = self.loop.step, self.loop.seconds
        objective = Objective.of(config)
        self.steps = StepRunner(parts.model, parts.optimizer, objective=objective, mesh=parts.mesh)
        self.guard = DivergenceGuard(config, ckpt, self.loop)

    def elapsed(self) -> float:
        return self.start_seconds + time.perf_counter() - self.t_session

    def save_latest(self, sums: MetricSums, epoch_t0: float) -> None:
        self.guard.check(sums)  # never save a non-finite state
        self.steps.sync()
        loop = self.loop
        loop.train, loop.seconds = sums.to_dict(), self.elapsed()
        loop.epoch_seconds = time.perf_counter() - epoch_t0
        state = dataclasses.asdict(loop)
        self.ckpt.save_latest(loop.step, self.parts.model, self.parts.optimizer, state)

    def adapt(self) -> None:
        """Adaptive execution (DESIGN 4): the partial layers' sizes follow their current
        thetas (one host read per step). When a size changes the runner is split again and
        the next step compiles for the new sizes (cached per tuple of sizes)."""
        if self.config.model.execution != "adaptive":
            return
        self.steps.sync()  # the modules see the runner's current arrays (no copies)
        if update_adaptive(self.parts.model):
            self.parts.model.train()  # an evaluation may have left the modules in eval mode
            self.steps.resplit()

    def train_epoch(self, bar, epoch_t0: float) -> MetricSums:
        """The remaining training steps of ``loop.epoch`` (up to ``max_steps``)."""
        config, loop = self.config, self.loop
        spe, every = self.parts.splits.train.steps_per_epoch, config.checkpoint_every_steps
        train_root = root_key(config.seed, TRAIN_SALT)
        sums = MetricSums(**loop.train)
        # Batch i + 1 travels to the devices while step i runs (prefetch).
        batches = self.parts.splits.train.epoch(loop.epoch, start_step=loop.epoch_step)
        for batch in prefetch(batches, self.parts.mesh):
            if config.max_steps is not None and loop.step >= config.max_steps:
                break
            key = jax.random.fold_in(train_root, loop.step)
            self.adapt()
            sums.add(self.steps(batch, key))
            loop.step += 1
            loop.epoch_step += 1
            bar.update(1)
            if loop.step % READ_EVERY == 0:  # steps READ_LAG old are done: no wait
                self.guard.check(sums, lag=READ_LAG)
                if not bar.disable and sums.count:
                    loss = sums.loss_sum / sums.count  # the epoch's mean up to there
                    bar.set_postfix(epoch=loop.epoch, loss=f"{loss:.4f}", refresh=False)
            stopping = loop.step == config.max_steps  # end_epoch(partial=True) saves then
            if every and loop.step % every == 0 and loop.epoch_step < spe and not stopping:
                self.save_latest(sums, epoch_t0)
        return sums
