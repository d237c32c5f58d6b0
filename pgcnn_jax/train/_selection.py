"""Where a run stands (:class:`LoopState`, saved with every "latest" checkpoint) and model
selection by validation accuracy (REFERENCE 5.4)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pgcnn_jax.train._config import TrainConfig
from pgcnn_jax.train._metrics import MetricSums

__all__ = ["LoopState", "select"]

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


def _is_improvement(loop: LoopState, acc: float, loss: float) -> bool:
    """``>=`` on accuracy; an equal accuracy counts only with a validation loss not higher.
    A non-finite validation loss never improves."""
    if not math.isfinite(loss):
        return False
    if loop.best_val_accuracy is None or acc > loop.best_val_accuracy:
        return True
    return acc == loop.best_val_accuracy and loss <= loop.best_val_loss


def select(loop: LoopState, accuracy: float, loss: float, *, partial: bool = False) -> bool:
    """Model selection after validating ``loop.epoch``: updates the best epoch and the
    epochs without improvement of ``loop``; returns whether the epoch is the new best.

    ``partial``: ``max_steps`` stopped the run inside the epoch; the pass is a candidate only
    while no epoch has finished, and the selection from before it is kept in
    ``loop.before_partial`` for a resumed run (:meth:`LoopState.reopen_epoch`)."""
    if partial:
        loop.before_partial = {k: getattr(loop, k) for k in _SELECTION_FIELDS}
    improved = (not partial or loop.best_epoch is None) and _is_improvement(loop, accuracy, loss)
    if improved:
        loop.best_val_accuracy, loop.best_val_loss = accuracy, loss
        loop.best_epoch, loop.epochs_without_improvement = loop.epoch, 0
    elif accuracy < loop.best_val_accuracy:
        loop.epochs_without_improvement += 1
    return improved
