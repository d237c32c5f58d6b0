"""``evaluate_run``: test a finished (or interrupted) run's checkpoint again, with K samples."""

from __future__ import annotations

import datetime
import os
from typing import Any

from pgcnn_jax.data import load_splits
from pgcnn_jax.train._loop import evaluate
from pgcnn_jax.train._restore import load_run
from pgcnn_jax.train._state import TEST_SALT, root_key

__all__ = ["evaluate_run"]


def evaluate_run(
    workdir: str | os.PathLike,
    *,
    eval_samples: int | None = None,
    which: str = "best",
    data: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Tests the ``which`` checkpoint of the run in ``workdir`` on its test split.

    The model and config come from :func:`~pgcnn_jax.train.load_run`; the test pass uses the
    trainer's own test key (``fold_in(key(seed), TEST_SALT)``), so ``eval_samples`` equal to
    the run's gives exactly the ``test_accuracy`` of its ``results.json`` (for the best
    checkpoint), and another ``K`` re-measures the same weights (see
    :func:`~pgcnn_jax.train.evaluate`).

    Args:
      workdir: the run directory.
      eval_samples: ``K`` (default: the run's own ``eval_samples``).
      which: ``"best"`` or ``"latest"``.
      data: another data source for the run's dataset (``"npz:PATH"``), e.g. a moved file.
      data_dir: another TFDS data directory.

    Returns:
      ``{"workdir", "which", "eval_samples", "test_accuracy", "test_accuracies", "test_loss",
      "test_examples", "date"}``; ``test_accuracy`` is that of the mean softmax of ``K``
      passes (``K > 1``) or of the single release-style pass (``K = 1``).
    """
    model, config = load_run(workdir, which=which)
    if eval_samples is None:
        eval_samples = config.eval_samples
    if isinstance(eval_samples, bool) or not isinstance(eval_samples, int) or eval_samples < 1:
        raise ValueError(f"eval_samples must be a positive int, got {eval_samples!r}")
    splits = load_splits(config, data=data, data_dir=data_dir)
    test = evaluate(
        model, splits.test, root_key(config.seed, TEST_SALT), config, samples=eval_samples
    )
    return {
        "workdir": os.path.abspath(os.fspath(workdir)),
        "which": which,
        "eval_samples": eval_samples,
        "test_accuracy": test.accuracy,
        "test_accuracies": test.accuracies,
        "test_loss": test.loss,
        "test_examples": test.count,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
