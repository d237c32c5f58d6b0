"""Training: config, schedules, jit-compiled steps, the resumable loop, checkpoints, metrics.

``train_and_evaluate(TrainConfig(...), workdir)`` trains with Adam (distribution parameters at
``lr_probs``), a per-step warm-up + cosine schedule and the kernel-norm / monotonic penalties
(an :class:`Objective`, REFERENCE 5), keeps the best validation epoch, tests it and writes
``config.json``, ``metrics.jsonl`` (:class:`EpochRecord` lines), ``checkpoints/{latest,best}``
and ``results.json`` (:class:`RunResults`) under ``workdir`` (a :class:`RunDir`);
``load_run(workdir)`` rebuilds the trained model from them.
"""

from pgcnn_jax.train._checkpoint import Checkpoints
from pgcnn_jax.train._config import (
    RESUMABLE_KEYS,
    SCHEDULERS,
    TrainConfig,
    config_differences,
    flat_config,
    upgrade_config_dict,
)
from pgcnn_jax.train._errors import TrainingDiverged, WorkdirLocked
from pgcnn_jax.train._evaluate import EvalSums, evaluate
from pgcnn_jax.train._lock import lock_workdir
from pgcnn_jax.train._loop import train_and_evaluate
from pgcnn_jax.train._mesh import check_devices, data_mesh
from pgcnn_jax.train._metrics import MetricsLog, MetricSums
from pgcnn_jax.train._records import EpochRecord, LayerStats, RunResults, TestScores
from pgcnn_jax.train._restore import CHECKPOINT_KINDS, load_run, load_run_config
from pgcnn_jax.train._retest import evaluate_run
from pgcnn_jax.train._rundir import RunDir, RunFiles, check_workdir
from pgcnn_jax.train._sampled import example_keys, sampled_log_probs
from pgcnn_jax.train._schedule import learning_rate_schedule, schedule_for
from pgcnn_jax.train._selection import LoopState
from pgcnn_jax.train._specs import EvalSettings, Objective, check_samples
from pgcnn_jax.train._state import (
    MAIN_LABEL,
    PROBS_LABEL,
    create_model,
    create_optimizer,
    distribution_entries,
    grad_snr_by_layer,
    layer_summary,
    make_optimizer,
    param_labels,
)
from pgcnn_jax.train._steps import (
    StepRunner,
    distribution_grads,
    eval_step,
    step_rngs,
    trace_counts,
    train_step,
)

__all__ = [
    "CHECKPOINT_KINDS",
    "MAIN_LABEL",
    "PROBS_LABEL",
    "RESUMABLE_KEYS",
    "SCHEDULERS",
    "StepRunner",
    "Checkpoints",
    "EpochRecord",
    "EvalSettings",
    "EvalSums",
    "LayerStats",
    "LoopState",
    "MetricSums",
    "MetricsLog",
    "Objective",
    "RunDir",
    "RunFiles",
    "RunResults",
    "TestScores",
    "TrainConfig",
    "TrainingDiverged",
    "WorkdirLocked",
    "check_devices",
    "check_samples",
    "check_workdir",
    "config_differences",
    "upgrade_config_dict",
    "create_model",
    "create_optimizer",
    "data_mesh",
    "distribution_entries",
    "distribution_grads",
    "eval_step",
    "evaluate",
    "evaluate_run",
    "grad_snr_by_layer",
    "example_keys",
    "flat_config",
    "layer_summary",
    "learning_rate_schedule",
    "lock_workdir",
    "load_run",
    "load_run_config",
    "make_optimizer",
    "param_labels",
    "sampled_log_probs",
    "schedule_for",
    "step_rngs",
    "trace_counts",
    "train_and_evaluate",
    "train_step",
]
