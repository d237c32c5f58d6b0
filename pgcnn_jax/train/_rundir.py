"""``RunDir``: a run's work directory and the files in it (DESIGN 6).

Layout::

    config.json      the TrainConfig (written once the data are loaded)
    metrics.jsonl    one EpochRecord per line, in epoch order
    results.json     the RunResults (strict JSON: null for a non-finite number)
    checkpoints/     "latest" and "best" (:class:`~pgcnn_jax.train.Checkpoints`)
    .lock            held while a process trains here (:func:`~pgcnn_jax.train.lock_workdir`)

Reading (:class:`RunFiles`, which a :class:`RunDir` is) takes no lock. Training opens the
directory once per run (:meth:`RunDir.open`): the lock is taken, the model's memory and the
stored config are checked, and every write goes through the opened object.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from pgcnn_jax.data import get_spec
from pgcnn_jax.models import check_kernel_memory, rendered_sets
from pgcnn_jax.train._checkpoint import Checkpoints
from pgcnn_jax.train._config import TrainConfig, config_differences
from pgcnn_jax.train._lock import lock_workdir
from pgcnn_jax.train._metrics import MetricsLog, write_json
from pgcnn_jax.train._records import EpochRecord, RunResults
from pgcnn_jax.train._selection import LoopState

__all__ = ["CONFIG_FILE", "METRICS_FILE", "RESULTS_FILE", "RunDir", "RunFiles", "check_workdir"]

CONFIG_FILE, METRICS_FILE, RESULTS_FILE = "config.json", "metrics.jsonl", "results.json"


class RunFiles:
    """The files of the run directory ``path``, read without a lock (nothing is touched on
    construction)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.log = MetricsLog(self.file(METRICS_FILE))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def read_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of ``config.json``; ``ValueError`` when the directory or
        the file is missing or unreadable."""
        if not os.path.isdir(self.path):
            raise ValueError(f"run directory {self.path!r} does not exist")
        path = self.file(CONFIG_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"{self.path!r} is not a run directory: it has no {CONFIG_FILE}")
        try:
            with open(path) as f:
                return TrainConfig.from_dict(json.load(f))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"cannot read {path}: {err}") from None

    def read_results(self) -> RunResults | None:
        """``results.json`` (``None`` when the run has not written it). Raises ``OSError`` or
        ``ValueError`` (``json.JSONDecodeError``: a damaged file) when it cannot be read."""
        path = self.file(RESULTS_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return RunResults.from_dict(json.load(f))

    def read_epochs(self, *, partial: bool = True) -> list[EpochRecord]:
        """The records of ``metrics.jsonl`` (a line cut by a kill and what follows are
        dropped); ``partial=False`` leaves out a validated partial epoch."""
        records = [EpochRecord.from_dict(r) for r in self.log.read()]
        return [r for r in records if partial or not r.partial_epoch]


class RunDir(RunFiles):
    """A run directory: :class:`RunFiles` plus, once opened for a config (:meth:`open`), the
    writes of a run (``config.json``, ``metrics.jsonl``, ``results.json``, checkpoints)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.config: TrainConfig | None = None  # set while opened

    @contextlib.contextmanager
    def open(self, config: TrainConfig) -> Iterator[RunDir]:
        """Holds the directory for a run of ``config`` for the ``with`` block, checking once
        that the model fits in memory (:func:`_check_memory`), then taking the lock and
        refusing checkpoints of another config. Nothing is written.

        Raises:
          ValueError: the model does not fit, or the directory holds checkpoints of another
            config (the message names the differing keys) or no ``config.json``.
          WorkdirLocked: another process holds the directory.
        """
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        if self.config is not None:
            raise ValueError(f"{self!r} is already open")
        _check_memory(config)
        with lock_workdir(self.path):
            _refuse_another_config(self, config)
            self.config = config
            try:
                yield self
            finally:
                self.config = None

    def _held(self) -> TrainConfig:
        if self.config is None:
            raise ValueError(f"{self!r} is not open: use `with run_dir.open(config):`")
        return self.config

    def finished(self) -> RunResults | None:
        """The results of a finished run (``None``: training not done or no results)."""
        loop = Checkpoints.latest_loop(self.path)
        if loop is None or not LoopState(**loop).training_done(self._held()):
            return None
        return self.read_results()

    def record(self) -> None:
        """Writes ``config.json``; without a checkpoint, removes a stale ``metrics.jsonl``
        and ``results.json`` first."""
        config = self._held()
        os.makedirs(self.path, exist_ok=True)
        if not Checkpoints.exists(self.path):
            for name in (RESULTS_FILE, METRICS_FILE):
                if os.path.exists(self.file(name)):
                    os.remove(self.file(name))
        write_json(self.file(CONFIG_FILE), config.to_dict())

    @contextlib.contextmanager
    def checkpoints(self) -> Iterator[Checkpoints]:
        """The run's :class:`Checkpoints`, closed (waiting for a save in flight) at the end of
        the ``with`` block."""
        self._held()
        ckpt = Checkpoints(self.path)
        try:
            yield ckpt
        finally:
            ckpt.close()

    def append_epoch(self, record: EpochRecord) -> None:
        self._held()
        self.log.append(record.to_dict())

    def keep_epochs(self, num_epochs: int) -> None:
        """Keeps the lines of epochs ``< num_epochs`` (those a resumed run does not redo)."""
        self._held()
        self.log.truncate(num_epochs)

    def write_results(self, results: RunResults) -> str:
        """Writes ``results.json`` (strict JSON); returns its path."""
        self._held()
        path = self.file(RESULTS_FILE)
        write_json(path, results.to_dict())
        return path


def check_workdir(config: TrainConfig, workdir: str, *, record: bool = True) -> None:
    """Opens ``workdir`` for ``config`` (:meth:`RunDir.open`: memory check, lock, refusal of
    checkpoints of another config) and, with ``record``, writes ``config.json``
    (:meth:`RunDir.record`). With ``record=False`` nothing is written or removed."""
    with RunDir(workdir).open(config) as run_dir:
        if record:
            run_dir.record()


def _check_memory(config: TrainConfig) -> None:
    """Refuses a model whose kernel rendering cannot fit in memory
    (:func:`~pgcnn_jax.models.check_kernel_memory`, with the element sets of
    :func:`~pgcnn_jax.models.rendered_sets` per forward)."""
    check_kernel_memory(
        config.model,
        in_features=get_spec(config.dataset).image_shape[-1],
        num_samples=rendered_sets(config.model, config.batch_size),
    )


def _refuse_another_config(files: RunFiles, config: TrainConfig) -> None:
    """``ValueError`` when ``files`` holds checkpoints of another config (or without a
    ``config.json``)."""
    if not Checkpoints.exists(files.path):
        return
    path = files.file(CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(f"workdir {files.path!r} holds checkpoints but no {CONFIG_FILE}")
    with open(path) as f:
        stored = json.load(f)
    diff = config_differences(stored, config)
    if diff:
        raise ValueError(
            f"workdir {files.path!r} holds a run with a different config (differing: "
            f"{', '.join(diff)}); use another workdir or delete this one"
        )
