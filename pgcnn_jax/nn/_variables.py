"""Variable types of partial equivariance (STYLE 10) and the helpers that move the Gumbel
schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class DistributionParam(nnx.Param):
    """A parameter of a learned distribution over the group (``theta``, the mirror parameter,
    per-element keep parameters). Trained with its own learning rate (``lr_probs``)."""


class GumbelStep(nnx.Variable):
    """Per-layer count ``t`` of optimiser steps, driving the relaxed-Bernoulli temperature
    ``tau(t / T)`` (REFERENCE 1.7). Advanced once per optimiser step by the train steps
    (:func:`advance_gumbel_steps`), not by forward passes."""


class GumbelHorizon(nnx.Variable):
    """Per-layer horizon ``T`` of the relaxed-Bernoulli temperature schedule (training steps).

    Ordinary traced state, not a static attribute: models that differ only in their horizon
    (e.g. runs with different ``epochs``) share one compiled train step. Set it with
    :func:`set_gumbel_horizon`."""


def advance_gumbel_steps(model: nnx.Module, steps: int = 1) -> None:
    """Adds ``steps`` to every :class:`GumbelStep` of ``model`` (works under ``jit``).

    Call it once per optimiser step: the train steps of :mod:`pgcnn_jax.train` do, after the
    update; a hand-written training loop must do the same."""
    state = nnx.state(model, GumbelStep)
    nnx.update(model, jax.tree.map(lambda t: t + steps, state))


def set_gumbel_horizon(model: nnx.Module, horizon: int) -> None:
    """Sets the temperature horizon ``T`` of every partial layer of ``model``."""
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"gumbel horizon must be a positive int, got {horizon!r}")
    state = nnx.state(model, GumbelHorizon)
    nnx.update(model, jax.tree.map(lambda t: jnp.full_like(t, horizon), state))


class KernelNorm(nnx.Variable):
    """``||K||_2 + ||b||_2`` of the kernel a conv rendered in its last call (REFERENCE 5.1);
    read it right after a forward pass, e.g. ``nnx.state(model, KernelNorm)``."""
