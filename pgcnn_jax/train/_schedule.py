"""Per-step learning-rate schedules (REFERENCE 5.3)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

__all__ = ["learning_rate_schedule", "schedule_for"]


def learning_rate_schedule(
    peak: float,
    *,
    scheduler: str = "cosine",
    warmup_steps: int = 0,
    decay_steps: int = 1,
    end_value: float = 1e-6,
) -> optax.Schedule:
    """Linear warm-up from 0, then a cosine to ``end_value``; or a constant.

    With ``W = warmup_steps`` and ``T = decay_steps``, the rate used by optimiser step ``s``
    (counted from 0) is

    .. math::
        \\eta(s) = \\eta\\, s / W \\quad (s < W), \\qquad
        \\eta(s) = \\eta_{\\min} + \\tfrac12 (\\eta - \\eta_{\\min})
        \\bigl(1 + \\cos(\\pi \\min(s - W, T) / T)\\bigr) \\quad (s \\ge W)

    so step 0 uses 0 (as the reference's ``LambdaLR``), step ``W`` the peak and steps from
    ``W + T`` on ``end_value``.

    >>> sched = learning_rate_schedule(1.0, warmup_steps=10, decay_steps=100, end_value=0.0)
    >>> [round(float(sched(s)), 3) for s in (0, 5, 10, 60, 110, 500)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    if scheduler == "constant":
        return optax.constant_schedule(peak)
    if scheduler != "cosine":
        raise ValueError(f"unknown scheduler {scheduler!r}; expected 'cosine' or 'constant'")
    if warmup_steps < 0 or decay_steps < 1:
        raise ValueError(
            f"need warmup_steps >= 0 and decay_steps >= 1, got {warmup_steps}, {decay_steps}"
        )

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        s = jnp.asarray(count, jnp.float32)
        warm = peak * s / max(warmup_steps, 1)
        t = jnp.clip(s - warmup_steps, 0, decay_steps)
        cos = end_value + (peak - end_value) * 0.5 * (1.0 + jnp.cos(math.pi * t / decay_steps))
        return jnp.where(s < warmup_steps, warm, cos)

    return schedule


def schedule_for(config, peak: float, *, steps_per_epoch: int | None = None) -> optax.Schedule:
    """The schedule of a :class:`TrainConfig` for base rate ``peak``: ``W = warmup_epochs * I``
    and ``T = (epochs - warmup_epochs) * I`` with ``I = steps_per_epoch`` steps per epoch (at
    least 1). The training loop passes ``config.steps_per_epoch(n)`` for the ``n`` training
    examples it loaded; ``None`` uses the dataset's nominal size
    (``config.steps_per_nominal_epoch``, REFERENCE 5.3)."""
    i = config.steps_per_nominal_epoch if steps_per_epoch is None else steps_per_epoch
    if isinstance(i, bool) or not isinstance(i, int) or i < 1:
        raise ValueError(f"steps_per_epoch must be None or a positive int, got {i!r}")
    return learning_rate_schedule(
        peak,
        scheduler=config.scheduler,
        warmup_steps=config.warmup_epochs * i,
        decay_steps=max((config.epochs - config.warmup_epochs) * i, 1),
        end_value=config.lr_min,
    )
