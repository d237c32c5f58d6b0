"""orbax checkpoints of a run: "latest" (resume) and "best" (model selection, REFERENCE 5.4).

Layout under ``workdir/checkpoints``::

    latest/<global step>/  {state: {model, optimizer}, loop: JSON}   (two kept)
    best/<epoch>/          {state: {model}, loop: JSON}
    corrupt/latest-<step>/ unreadable "latest" checkpoints set aside on resume

Saves are asynchronous and atomic: ``save_*`` copies the state on the device and returns
while orbax writes in the background to a temporary directory that it renames when done, so a
run killed at any moment leaves the previous checkpoint intact. Every read, restore, listing
and the next save first wait for a save in flight (:meth:`Checkpoints.wait`), as does
:meth:`Checkpoints.close`. The loop JSON of "latest" names the epoch whose "best" checkpoint is
current; a best checkpoint is deleted only when no committed "latest" names it and neither
does the one being saved.

Two "latest" checkpoints are kept so that a damaged newest one (a truncated file, a full
disk) costs the steps since the one before: resuming sets the unreadable one aside under
``corrupt/`` with a warning and continues from the older one. Without an intact one,
resuming stops with a ``ValueError`` naming the checkpoint directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import tensorstore as ts

from pgcnn_jax.train._state import get_pure_state, set_pure_state

__all__ = ["Checkpoints"]

_LOG = logging.getLogger(__name__)
LATEST_TO_KEEP = 2


def _manager(path: str, max_to_keep: int | None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(os.path.abspath(path), options=options)


@jax.jit
def _copy(tree: Any) -> Any:
    """A fresh device copy of ``tree``: a save in flight keeps its own buffers while the
    training step donates the live ones."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _steps(path: str) -> list[int]:
    """Committed step directories under ``path``, newest first."""
    if not os.path.isdir(path):
        return []
    return sorted((int(n) for n in os.listdir(path) if n.isdigit()), reverse=True)


def _reason(err: BaseException) -> str:
    """The first line of an exception, for a one-line message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _check_readable(step_dir: str) -> None:
    """Reads every file of a checkpoint once, synchronously; raises on a damaged one.

    orbax restores arrays concurrently: when one read fails, the others complete on a closed
    event loop and print a traceback each. Reading the OCDBT store (orbax's array format)
    key by key first turns a truncated array file into one exception, before orbax starts.
    """
    for name in (os.path.join("loop", "metadata"), os.path.join("state", "_METADATA")):
        path = os.path.join(step_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                json.load(f)
    state = os.path.join(step_dir, "state")
    if os.path.exists(os.path.join(state, "manifest.ocdbt")):
        spec = {"driver": "ocdbt", "base": {"driver": "file", "path": f"{state}/"}}
        store = ts.KvStore.open(spec).result()
        for key in store.list().result():
            store.read(key).result()


def _unreadable(path: str, reason: str) -> ValueError:
    return ValueError(
        f"checkpoint {path} is unreadable ({reason}) and no older intact checkpoint exists; "
        f"delete {os.path.dirname(os.path.dirname(path))} (or the whole workdir) to start "
        "this run again"
    )


def _committed(workdir: str) -> bool:
    root = os.path.join(workdir, "checkpoints")
    for sub in ("latest", "best"):
        path = os.path.join(root, sub)
        if os.path.isdir(path) and any(name.isdigit() for name in os.listdir(path)):
            return True
    return False


def _newest_loop(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, "checkpoints", "latest")
    for step in _steps(path):
        try:
            with open(os.path.join(path, str(step), "loop", "metadata")) as f:
                loop = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(loop, dict):
            return loop
    return None


def _save(manager: ocp.CheckpointManager, step: int, state: Any, loop: dict[str, Any]) -> None:
    """Starts saving ``state`` (copied on the device) and the ``loop`` JSON at ``step``."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_copy(state)), loop=ocp.args.JsonSave(loop)
    )
    manager.save(step, args=args)


def _restore(manager: ocp.CheckpointManager, step_dir: str, step: int, abstract: Any) -> Any:
    """The ``state`` / ``loop`` of ``step`` (read once synchronously first: raises on a
    damaged checkpoint, see :func:`_check_readable`)."""
    _check_readable(step_dir)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore())
    return manager.restore(step, args=args)


def _set_aside(directory: str, step: int) -> str:
    """Moves the unreadable ``directory/latest/<step>`` to ``directory/corrupt/``; returns its
    new path."""
    target = os.path.join(directory, "corrupt", f"latest-{step}")
    suffix = 0
    while os.path.exists(target if not suffix else f"{target}.{suffix}"):
        suffix += 1
    target = target if not suffix else f"{target}.{suffix}"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(os.path.join(directory, "latest", str(step)), target)
    return target


class _Managers:
    """The "latest" and "best" checkpoint managers of one work directory, and the "best"
    side (:class:`Checkpoints` adds the "latest" side)."""

    def __init__(self, workdir: str):
        self.directory = os.path.join(workdir, "checkpoints")
        self.latest = _manager(os.path.join(self.directory, "latest"), LATEST_TO_KEEP)
        self.best = _manager(os.path.join(self.directory, "best"), max_to_keep=None)

    @staticmethod
    def exists(workdir: str) -> bool:
        """Whether ``workdir`` holds a committed checkpoint (without creating anything)."""
        return _committed(workdir)

    @staticmethod
    def latest_loop(workdir: str) -> dict[str, Any] | None:
        """The loop JSON of the newest readable latest checkpoint, read without building a
        model (``None`` when there is none; an unreadable one is left to
        :meth:`Checkpoints.restore_latest`)."""
        return _newest_loop(workdir)

    def wait(self) -> None:
        """Waits until the saves in flight are committed."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def _latest_dir(self, step: int) -> str:
        return os.path.join(self.directory, "latest", str(step))

    def _delete_unnamed_best(self, *named: int | None) -> None:
        """Deletes the best checkpoints that no committed latest one (nor ``named``) names."""
        keep = set(named)
        for other in self.latest.all_steps():
            try:
                with open(os.path.join(self._latest_dir(other), "loop", "metadata")) as f:
                    keep.add(json.load(f).get("best_epoch"))
            except (OSError, ValueError, AttributeError):
                return  # cannot tell which best checkpoint it needs: delete none
        for epoch in self.best.all_steps():
            if epoch not in keep:
                self.best.delete(epoch)

    def save_best(self, epoch: int, model, info: dict[str, Any]) -> None:
        """Starts saving the model as the best of ``epoch`` (returns before it is written)."""
        self.wait()
        if epoch in self.best.all_steps():  # re-done after a restart: same content
            self.best.delete(epoch)
        _save(self.best, epoch, {"model": get_pure_state(model)}, info)

    def restore_best(self, epoch: int, model) -> None:
        """Loads the best checkpoint of ``epoch`` into ``model``."""
        self.wait()
        found = sorted(self.best.all_steps())
        if epoch not in found:
            raise ValueError(
                f"no best checkpoint for epoch {epoch} under {self.directory}/best (found {found})"
            )
        path = os.path.join(self.directory, "best", str(epoch))
        try:
            restored = _restore(self.best, path, epoch, {"model": _abstract(get_pure_state(model))})
        except Exception as err:  # orbax / tensorstore / JSON errors alike: unreadable
            raise ValueError(
                f"best checkpoint {path} is unreadable ({_reason(err)}); delete "
                f"{self.directory} (or the whole workdir) to train this run again"
            ) from None
        set_pure_state(model, restored.state["model"])

    def close(self) -> None:
        """Waits for the saves in flight, deletes best checkpoints no latest one names, and
        closes the managers."""
        try:
            self.wait()
            self._delete_unnamed_best()
        finally:
            self.latest.close()
            self.best.close()


class Checkpoints(_Managers):
    """The "latest" and "best" checkpoints of one work directory."""

    def save_latest(self, step: int, model, optimizer, loop: dict[str, Any]) -> None:
        """Starts saving model + optimizer state and the loop JSON at global ``step`` (once
        committed, the oldest of the kept ones goes), after deleting the best checkpoints that
        neither a committed latest one nor ``loop`` names. Returns before the files are
        written."""
        self.wait()  # the previous save (long done: saves are many steps apart)
        if step in self.latest.all_steps():
            return  # nothing has changed since that save
        self._delete_unnamed_best(loop.get("best_epoch"))
        state = {"model": get_pure_state(model), "optimizer": get_pure_state(optimizer)}
        _save(self.latest, step, state, loop)

    def restore_latest(self, model, optimizer) -> dict[str, Any] | None:
        """Loads the newest readable latest checkpoint into ``model`` / ``optimizer``;
        returns its loop JSON, or ``None`` when there is none.

        An unreadable checkpoint with an older one behind it is moved to
        ``checkpoints/corrupt/`` with a warning naming both; without an older one the
        ``ValueError`` names its directory and what to do.
        """
        self.wait()
        abstract = {
            "model": _abstract(get_pure_state(model)),
            "optimizer": _abstract(get_pure_state(optimizer)),
        }
        steps = sorted(self.latest.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            path = self._latest_dir(step)
            try:
                restored = _restore(self.latest, path, step, abstract)
                loop = dict(restored.loop)
            except Exception as err:  # orbax / tensorstore / JSON errors alike: unreadable
                if i + 1 == len(steps):
                    raise _unreadable(path, _reason(err)) from None
                moved = _set_aside(self.directory, step)
                self.latest.reload()
                _LOG.warning(
                    "checkpoint %s is unreadable (%s): moved to %s; resuming from the older "
                    "checkpoint %s (steps after %d are trained again)",
                    path, _reason(err), moved, self._latest_dir(steps[i + 1]), steps[i + 1],
                )  # fmt: skip
                continue
            set_pure_state(model, restored.state["model"])
            set_pure_state(optimizer, restored.state["optimizer"])
            return loop
        return None
