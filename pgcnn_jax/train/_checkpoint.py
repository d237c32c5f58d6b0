"""orbax checkpoints of a run: "latest" (resume) and "best" (model selection, REFERENCE 5.4).

Layout under ``workdir/checkpoints``::

    latest/<global step>/  {state: {model, optimizer}, loop: JSON}   (one kept)
    best/<epoch>/          {state: {model}, loop: JSON}

Saves are synchronous and atomic (orbax writes to a temporary directory and renames it), so a
run killed at any moment leaves the previous checkpoint intact. The loop JSON of "latest"
names the epoch whose "best" checkpoint is current; best checkpoints of other epochs are
deleted only after that JSON is committed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp

from pgcnn_jax.train._state import get_pure_state, set_pure_state

__all__ = ["Checkpoints"]


def _manager(path: str, max_to_keep: int | None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(os.path.abspath(path), options=options)


class _ReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning (and nothing else)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def _no_read_only_notice() -> Iterator[None]:
    notice = _ReadOnlyNotice()
    logger = logging.getLogger("absl")  # orbax logs through absl.logging
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    """The "latest" and "best" checkpoint managers of one work directory."""

    def __init__(self, workdir: str):
        self.directory = os.path.join(workdir, "checkpoints")
        self.latest = _manager(os.path.join(self.directory, "latest"), max_to_keep=1)
        self.best = _manager(os.path.join(self.directory, "best"), max_to_keep=None)

    @staticmethod
    def exists(workdir: str) -> bool:
        """Whether ``workdir`` holds a committed checkpoint (without creating anything)."""
        root = os.path.join(workdir, "checkpoints")
        for sub in ("latest", "best"):
            path = os.path.join(root, sub)
            if os.path.isdir(path) and any(name.isdigit() for name in os.listdir(path)):
                return True
        return False

    @staticmethod
    def latest_loop(workdir: str) -> dict[str, Any] | None:
        """The loop JSON of the latest checkpoint, read without building a model (``None``
        when there is none)."""
        path = os.path.join(workdir, "checkpoints", "latest")
        steps = [int(n) for n in os.listdir(path) if n.isdigit()] if os.path.isdir(path) else []
        if not steps:
            return None
        # save_interval_steps=0 and create=False are what read_only implies (orbax warns when
        # it has to set them); its notice that the directory is read-only is what we ask for.
        options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
        with (
            _no_read_only_notice(),
            ocp.CheckpointManager(os.path.abspath(path), options=options) as manager,
        ):
            step = manager.latest_step()
            if step is None:
                return None
            restored = manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
        return dict(restored.loop)

    # ------------------------------------------------------------------ latest
    def save_latest(self, step: int, model, optimizer, loop: dict[str, Any]) -> None:
        """Saves model + optimizer state and the loop JSON at global ``step``, then deletes
        best checkpoints other than ``loop["best_epoch"]``."""
        if step in self.latest.all_steps():
            return  # nothing has changed since that save
        state = {"model": get_pure_state(model), "optimizer": get_pure_state(optimizer)}
        self.latest.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop)
            ),
        )
        self.latest.wait_until_finished()
        keep = loop.get("best_epoch")
        for epoch in self.best.all_steps():
            if epoch != keep:
                self.best.delete(epoch)

    def restore_latest(self, model, optimizer) -> dict[str, Any] | None:
        """Loads the latest checkpoint into ``model`` / ``optimizer``; returns its loop JSON,
        or ``None`` when there is none."""
        step = self.latest.latest_step()
        if step is None:
            return None
        abstract = {
            "model": _abstract(get_pure_state(model)),
            "optimizer": _abstract(get_pure_state(optimizer)),
        }
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()
            ),
        )
        set_pure_state(model, restored.state["model"])
        set_pure_state(optimizer, restored.state["optimizer"])
        return dict(restored.loop)

    # ------------------------------------------------------------------ best
    def save_best(self, epoch: int, model, info: dict[str, Any]) -> None:
        if epoch in self.best.all_steps():  # re-done after a restart: same content
            self.best.delete(epoch)
        self.best.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"model": get_pure_state(model)}),
                loop=ocp.args.JsonSave(info),
            ),
        )
        self.best.wait_until_finished()

    def restore_best(self, epoch: int, model) -> None:
        """Loads the best checkpoint of ``epoch`` into ``model``."""
        if epoch not in self.best.all_steps():
            raise ValueError(
                f"no best checkpoint for epoch {epoch} under {self.directory}/best "
                f"(found {sorted(self.best.all_steps())})"
            )
        abstract = {"model": _abstract(get_pure_state(model))}
        restored = self.best.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()
            ),
        )
        set_pure_state(model, restored.state["model"])

    def close(self) -> None:
        self.latest.close()
        self.best.close()
