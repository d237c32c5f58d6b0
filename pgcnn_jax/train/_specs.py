"""Frozen values passed to the steps and the evaluation: the objective and the evaluation
settings (hashable, so they are static arguments of the jitted steps)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from pgcnn_jax.models import kernel_norm_penalty, monotonic_penalty

__all__ = ["PER_EXAMPLE_MODES", "EvalSettings", "Objective", "check_per_example", "check_samples"]

PER_EXAMPLE_MODES = ("auto", "map", "vmap")


def check_samples(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a positive int: the one check of an
    evaluation's number of passes ``K`` (``eval_samples``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_per_example(value: Any) -> None:
    """``ValueError`` unless ``value`` is one of :data:`PER_EXAMPLE_MODES`."""
    if value not in PER_EXAMPLE_MODES:
        raise ValueError(f"per_example must be one of {PER_EXAMPLE_MODES}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Objective:
    """The penalties added to the cross-entropy (REFERENCE 5.1, 4.5).

    Attributes:
      weight_decay: weight ``w`` of the kernel-norm penalty
        ``w * sum_l (||K_l|| + ||b_l||)`` (:func:`~pgcnn_jax.models.kernel_norm_penalty`).
      monotonic: weight ``lambda`` of the monotonic-decay penalty
        (:func:`~pgcnn_jax.models.monotonic_penalty`; CKResNet).
    """

    weight_decay: float = 0.0
    monotonic: float = 0.0

    def __post_init__(self):
        for name in ("weight_decay", "monotonic"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            # Floats, so that 0 and 0.0 are one static argument of the jitted steps.
            object.__setattr__(self, name, float(value))

    @classmethod
    def of(cls, config: Any) -> Objective:
        """The objective of a :class:`~pgcnn_jax.train.TrainConfig`."""
        return cls(weight_decay=config.weight_decay, monotonic=config.monotonic)

    def penalized(self, value: jax.Array, model: Any) -> jax.Array:
        """``value`` plus the penalties of ``model`` (after its forward: the kernel norms are
        those it recorded); a zero weight adds nothing."""
        if self.weight_decay:
            value = value + self.weight_decay * kernel_norm_penalty(model)
        if self.monotonic:
            value = value + monotonic_penalty(model, self.monotonic)
        return value

    def penalty(self, model: Any) -> jax.Array:
        """The penalties of ``model`` alone (a float32 scalar)."""
        return self.penalized(jnp.zeros((), jnp.float32), model)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How an evaluation pass runs (:func:`~pgcnn_jax.train.evaluate`).

    Attributes:
      samples: ``K``, passes per example (``1``: one stochastic pass like the reference;
        ``K > 1``: the mean softmax of ``K`` per-example samplings, DESIGN 5).
      objective: the penalties included in the loss, as in training (tie-breaking).
      devices: devices the batch is split over (``None``: every device).
      per_example: how the ``K > 1`` passes run (:data:`PER_EXAMPLE_MODES`).
    """

    samples: int = 1
    objective: Objective = Objective()
    devices: int | None = None
    per_example: str = "auto"

    def __post_init__(self):
        check_samples("eval_samples", self.samples)
        if not isinstance(self.objective, Objective):
            raise ValueError(f"objective must be an Objective, got {self.objective!r}")
        check_per_example(self.per_example)

    @classmethod
    def of(cls, config: Any, *, samples: int | None = None) -> EvalSettings:
        """The evaluation of a :class:`~pgcnn_jax.train.TrainConfig` (``samples``: another
        ``K`` than its ``eval_samples``)."""
        return cls(
            samples=config.eval_samples if samples is None else samples,
            objective=Objective.of(config),
            devices=config.devices,
        )
