"""Errors of a training run that are not bad input: divergence and a busy work directory."""

from __future__ import annotations

__all__ = ["TrainingDiverged", "WorkdirLocked"]


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became non-finite (NaN / inf) during training.

    Raised by :func:`~pgcnn_jax.train.train_and_evaluate` at the first point where the loop
    reads the step metrics (progress updates, checkpoints, the end of an epoch). Nothing
    non-finite is saved: ``checkpoints/latest`` keeps the last finite state and no
    non-finite epoch is selected as best.
    """


class WorkdirLocked(RuntimeError):
    """Another process holds the lock of the work directory (it is training there)."""
