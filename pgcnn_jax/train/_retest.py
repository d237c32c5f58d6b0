"""``evaluate_run``: test a finished (or interrupted) run's checkpoint again, with K samples."""

from __future__ import annotations

import datetime
import os
from typing import Any

from pgcnn_jax.data import load_splits
from pgcnn_jax.train._evaluate import evaluate
from pgcnn_jax.train._records import TestScores
from pgcnn_jax.train._restore import load_run
from pgcnn_jax.train._specs import EvalSettings
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
      ``{"workdir", "which", "test_accuracy", "test_accuracies", "eval_samples",
      "test_examples", "test_loss", "date"}`` (the :class:`~pgcnn_jax.train.TestScores` keys
      of ``results.json``, read back with ``TestScores.from_dict``); ``test_accuracy`` is that
      of the mean softmax of ``K`` passes (``K > 1``) or of the single release-style pass
      (``K = 1``).
    """
    model, config = load_run(workdir, which=which)
    settings = EvalSettings.of(config, samples=eval_samples)
    splits = load_splits(config, data=data, data_dir=data_dir)
    test = evaluate(model, splits.test, root_key(config.seed, TEST_SALT), settings)
    return (
        {"workdir": os.path.abspath(os.fspath(workdir)), "which": which}
        | TestScores.of(test).to_dict()
        | {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    )
