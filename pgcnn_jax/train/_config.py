"""Frozen, validated training configuration (REFERENCE 5, DESIGN 7)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pgcnn_jax.data import DataSource, get_dataset, get_spec
from pgcnn_jax.models import ModelConfig, upgrade_model_dict
from pgcnn_jax.train._specs import check_samples

__all__ = [
    "RESUMABLE_KEYS",
    "SCHEDULERS",
    "TrainConfig",
    "config_differences",
    "flat_config",
    "upgrade_config_dict",
]

SCHEDULERS = ("cosine", "constant")

# Keys that may change between a run and its resumption, and that a table does not list as a
# modification of a run (the one list of "keys that do not change results"): they do not
# change any number the run computes (where the data lives, when the run pauses, how often it
# checkpoints, over how many devices the batch is split: up to float rounding of the batch
# reductions; whether partial layers run masked or adaptive: the same numbers to float
# rounding).
# ``max_steps`` only decides where a run stops; continuing with a larger value follows the
# very same trajectory as a run that never stopped.
RESUMABLE_KEYS = (
    "data_dir",
    "max_steps",
    "checkpoint_every_steps",
    "devices",
    "model.execution",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (REFERENCE 5, 7).

    Attributes:
      dataset: registry name (:data:`pgcnn_jax.data.DATASET_NAMES`).
      model: the :class:`~pgcnn_jax.models.ModelConfig`. Its ``gumbel_horizon`` is set to
        :attr:`gumbel_horizon` whatever value is passed, so that ``config.json`` records the
        horizon the run used. The models hold the horizon as traced state
        (:class:`~pgcnn_jax.nn.GumbelHorizon`): runs that differ only in ``epochs`` share one
        compiled train step.
      data: ``None`` (TFDS) or ``"npz:PATH"``.
      data_dir: TFDS data directory (``None``: the TFDS default).
      epochs: training epochs.
      batch_size: examples per batch (train, validation and test).
      lr: peak learning rate of every parameter but the distribution parameters.
      lr_probs: peak learning rate of :class:`~pgcnn_jax.nn.DistributionParam` leaves
        (``theta``, mirror, keep); ``0`` means ``lr``.
      weight_decay: weight ``w`` of the kernel-norm penalty ``w * sum_l (||K_l|| + ||b_l||)``
        (REFERENCE 5.1), *not* optimizer weight decay.
      monotonic: weight ``lambda`` of the monotonic-decay penalty (REFERENCE 4.5; CKResNet).
      scheduler: ``"cosine"`` (linear warm-up from 0, then cosine to ``lr_min``, per step) or
        ``"constant"``.
      warmup_epochs: warm-up length in nominal epochs (cosine only).
      lr_min: final learning rate of the cosine.
      gradient_clip: global-norm clipping threshold; ``0`` disables it.
      seed: initialisation, data order and sampling keys derive from it.
      augment: random crop + horizontal flip (CIFAR only; no paper run uses it).
      rot_interval: degrees of the fixed random rotation of MNIST6-180 sixes.
      max_steps: stop after this many optimiser steps in total (smoke runs); ``None``: no
        limit. A stopped run continues when started again with a larger value.
      early_stop_patience: stop after this many epochs with validation accuracy below the best.
      checkpoint_every_steps: also save the resumable "latest" checkpoint every this many
        steps inside an epoch (``0``: at epoch ends only).
      eval_samples: ``K``, evaluation passes (validation and test, DESIGN 5). ``1``: one
        stochastic pass like the reference (each batch shares its sampled elements). ``K > 1``:
        every example gets its own elements from a key derived from its index in the split
        (independent of batch composition and order) and the prediction is the mean softmax
        of ``K`` independent samplings; costs ``K`` forward passes per example.
      devices: devices the batch is split over (data parallel, state replicated; BatchNorm
        statistics stay those of the whole batch); ``None``: every device. ``batch_size``
        must be a multiple of it. A run may resume on another count.
    """

    dataset: str
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: str | None = None
    data_dir: str | None = None
    epochs: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    lr_probs: float = 0.0
    weight_decay: float = 0.0
    monotonic: float = 0.0
    scheduler: str = "cosine"
    warmup_epochs: int = 5
    lr_min: float = 1e-6
    gradient_clip: float = 0.0
    seed: int = 0
    augment: bool = False
    rot_interval: float = 0.0
    max_steps: int | None = None
    early_stop_patience: int = 100
    checkpoint_every_steps: int = 200
    eval_samples: int = 1
    devices: int | None = None

    def __post_init__(self):
        get_spec(self.dataset)  # an unknown dataset raises here
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"model must be a ModelConfig, got {type(self.model).__name__}")
        DataSource.parse(self.data)  # a malformed source raises here
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "lr_probs", "weight_decay", "monotonic", "lr_min", "gradient_clip"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; expected one of {SCHEDULERS}")
        for name in ("warmup_epochs", "seed", "checkpoint_every_steps"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not _is_int(self.early_stop_patience) or self.early_stop_patience < 1:
            raise ValueError(
                f"early_stop_patience must be a positive int, got {self.early_stop_patience!r}"
            )
        if self.max_steps is not None and (not _is_int(self.max_steps) or self.max_steps < 1):
            raise ValueError(f"max_steps must be None or a positive int, got {self.max_steps!r}")
        check_samples("eval_samples", self.eval_samples)
        if self.devices is not None:
            if not _is_int(self.devices) or self.devices < 1:
                raise ValueError(f"devices must be None or a positive int, got {self.devices!r}")
            if self.batch_size % self.devices:
                raise ValueError(
                    f"batch_size={self.batch_size} is not divisible by devices={self.devices}: "
                    "every device takes an equal share of the batch"
                )
        if self.monotonic and self.model.model != "ckresnet":
            raise ValueError(
                f"monotonic={self.monotonic} needs model 'ckresnet', got {self.model.model!r}"
            )
        if not _is_number(self.rot_interval) or self.rot_interval < 0:
            raise ValueError(f"rot_interval must be >= 0 degrees, got {self.rot_interval!r}")
        # augment / rot_interval on a dataset that does not support them raise here
        get_dataset(self.dataset).check_settings(
            augment=self.augment, rot_interval=self.rot_interval
        )
        horizon = self.gumbel_horizon
        if self.model.gumbel_horizon != horizon:
            # Normalising a field of a frozen dataclass in ``__post_init__`` (the documented
            # idiom): the config stays immutable after construction.
            object.__setattr__(self, "model", self.model.replace(gumbel_horizon=horizon))

    # ------------------------------------------------------------------ derived numbers
    @property
    def steps_per_nominal_epoch(self) -> int:
        """``I = ceil(nominal_train_size / batch_size)`` (REFERENCE 5.3)."""
        return self.steps_per_epoch()

    def steps_per_epoch(self, num_train_examples: int | None = None) -> int:
        """``I = ceil(n / batch_size)``: schedule steps per epoch for a training set of ``n``
        examples, the one actually loaded, or by default the dataset's nominal size
        (REFERENCE 5.3; the two agree for the TFDS sources). As in the reference, ``I`` counts
        a last incomplete batch that the training loader drops.

        >>> config = TrainConfig(dataset="cifar10")
        >>> config.steps_per_epoch(), config.steps_per_epoch(100)
        (704, 2)
        """
        n = num_train_examples
        if n is None:
            n = get_spec(self.dataset).nominal_train_size
        if not _is_int(n) or n < 1:
            raise ValueError(f"num_train_examples must be a positive int, got {n!r}")
        return math.ceil(n / self.batch_size)

    @property
    def gumbel_horizon(self) -> int:
        """Horizon ``T = epochs * I`` of the relaxed-Bernoulli temperature, in optimiser steps
        (REFERENCE 1.7); the Gumbel step counters advance once per optimiser step."""
        return self.epochs * self.steps_per_nominal_epoch

    @property
    def lr_probs_or_lr(self) -> float:
        return self.lr_probs if self.lr_probs > 0 else self.lr

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists, the model's kernel spec nested);
        inverse of :meth:`from_dict`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Builds a config from :meth:`to_dict` output, or from a ``config.json`` written before
        the model's kernel settings were nested (:meth:`ModelConfig.from_dict`); unknown keys
        raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"a TrainConfig dict is needed, got {type(d).__name__}")
        d = dict(d)
        model = d.pop("model", {})
        if isinstance(model, dict):
            model = ModelConfig.from_dict(model)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown train config key(s) {unknown}")
        return cls(model=model, **d)


def upgrade_config_dict(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored :meth:`TrainConfig.to_dict` (``config.json``) in today's form: the model's
    kernel settings nested (:func:`~pgcnn_jax.models.upgrade_model_dict`) and the keys added
    since with the values older runs used (one evaluation pass, no group options)."""
    out = {"eval_samples": 1} | dict(stored)
    model = {"group_options": []} | upgrade_model_dict(out.get("model", {}))
    return out | {"model": model}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def flat_config(d: dict[str, Any]) -> dict[str, Any]:
    """A :meth:`TrainConfig.to_dict` (or ``config.json``) with dotted keys:
    ``{"lr": ..., "model.width": ..., ...}``."""
    return _flatten(d)


def config_differences(stored: dict[str, Any], current: TrainConfig) -> list[str]:
    """Keys (``"lr"``, ``"model.width"``, ``"model.kernel.options.omega_0"``, ...) whose
    values differ between a stored :meth:`TrainConfig.to_dict` (today's or an older form:
    :func:`upgrade_config_dict`) and ``current``, ignoring :data:`RESUMABLE_KEYS`."""
    a, b = _flatten(upgrade_config_dict(stored)), _flatten(current.to_dict())
    return sorted(
        k for k in set(a) | set(b) if k not in RESUMABLE_KEYS and a.get(k, None) != b.get(k, None)
    )
