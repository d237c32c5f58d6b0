"""``load_run``: a trained model back from a run directory, for analysis and figures."""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from flax import nnx

from pgcnn_jax.nn import update_adaptive
from pgcnn_jax.train._config import TrainConfig
from pgcnn_jax.train._rundir import CONFIG_FILE, RunDir
from pgcnn_jax.train._state import create_model, create_optimizer, get_pure_state, set_pure_state

__all__ = ["CHECKPOINT_KINDS", "load_run", "load_run_config"]

CHECKPOINT_KINDS = ("best", "latest")


def _steps(path: str) -> list[int]:
    if not os.path.isdir(path):
        return []
    return sorted(int(name) for name in os.listdir(path) if name.isdigit())


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _best_epoch(workdir: str, epochs: list[int]) -> int:
    """The epoch the newest "latest" checkpoint names as best (else the newest best one)."""
    latest = os.path.join(workdir, "checkpoints", "latest")
    for step in reversed(_steps(latest)):
        try:
            with open(os.path.join(latest, str(step), "loop", "metadata")) as f:
                best = json.load(f).get("best_epoch")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if best in epochs:
            return best
    return epochs[-1]


def load_run_config(workdir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` of a run directory (its ``config.json``), without building the
    model. ``ValueError`` when the directory or the file is missing or unreadable."""
    return RunDir(workdir).read_config()


def load_run(workdir: str | os.PathLike, *, which: str = "best") -> tuple[nnx.Module, TrainConfig]:
    """Rebuilds the model of a :func:`~pgcnn_jax.train.train_and_evaluate` run.

    The model is built from ``workdir/config.json`` and its whole state (parameters,
    BatchNorm statistics, Gumbel step counters) is restored from
    ``workdir/checkpoints/<which>``: ``"best"`` is the epoch selected by validation accuracy
    (the weights ``results.json`` was tested with), ``"latest"`` the last saved step. The
    model is returned in eval mode.

    Args:
      workdir: the run directory.
      which: ``"best"`` or ``"latest"``.

    Returns:
      ``(model, config)``.

    Raises:
      ValueError: when the directory, its ``config.json`` or the checkpoint is missing, or the
        config cannot be read.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    if which not in CHECKPOINT_KINDS:
        raise ValueError(f"which must be one of {CHECKPOINT_KINDS}, got {which!r}")
    config = load_run_config(workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints", which)
    steps = _steps(ckpt_dir)
    if not steps:
        hint = (
            " (no validation pass yet? the latest checkpoint: --which=latest, or which='latest' "
            "from Python)"
            if which == "best"
            else ""
        )
        raise ValueError(f"run {workdir!r} has no {which!r} checkpoint under {ckpt_dir}{hint}")

    model = create_model(config)
    if which == "best":
        step = _best_epoch(workdir, steps)
        abstract = {"model": _abstract(get_pure_state(model))}
    else:
        step = steps[-1]
        optimizer = create_optimizer(config, model)  # the saved tree holds its state too
        abstract = {
            "model": _abstract(get_pure_state(model)),
            "optimizer": _abstract(get_pure_state(optimizer)),
        }
    # Only committed checkpoints have a plain step number as name (orbax renames a finished
    # temporary directory), so reading one directly is safe while a run is still writing.
    path = os.path.join(ckpt_dir, str(step), "state")
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path, abstract)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise ValueError(
            f"checkpoint {path} does not fit the model of {workdir}/{CONFIG_FILE}: {err}"
        ) from None
    set_pure_state(model, restored["model"])
    if config.model.execution == "adaptive":
        update_adaptive(model)  # the sizes of the restored thetas
    model.eval()
    return model, config
