"""The jit-compiled train and evaluation steps (STYLE 9, REFERENCE 5.1).

Two forms of the same computation:

* :func:`train_step` / :func:`eval_step`: ``nnx.jit`` over ``(model, optimizer, ...)``, the
  public NNX-style API.
* :class:`StepRunner` / :func:`eval_state`: ``jax.jit`` over the split state, used by the
  training loop. ``nnx.jit`` walks the whole module graph on every call (about 10 ms for a
  CKResNet with its optimizer, more than many GPU steps); the runner splits once per session.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pgcnn_jax.models import kernel_norm_penalty, monotonic_penalty
from pgcnn_jax.nn import advance_gumbel_steps

__all__ = ["StepRunner", "eval_state", "eval_step", "step_rngs", "trace_counts", "train_step"]

_TRACES: collections.Counter[str] = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How often each step function was traced in this process (``train_step``,
    ``eval_step``, ``train_state``, ``eval_state``): a retracing guard for tests, since new
    data and keys of the same shapes must not retrace."""
    return dict(_TRACES)


def step_rngs(key: jax.Array) -> nnx.Rngs:
    """``nnx.Rngs`` with the ``sample`` and ``dropout`` streams a model call needs, both derived
    from one step key."""
    k_sample, k_dropout = jax.random.split(key)
    return nnx.Rngs(sample=k_sample, dropout=k_dropout)


def _objective(model, batch, key, weight_decay: float, monotonic: float):
    """Cross-entropy + ``w`` kernel-norm penalty + monotonic penalty (REFERENCE 5.1, 4.5).

    An optional ``batch["mask"]`` (``[B]``, 1 = real example) excludes padding examples from
    the cross-entropy mean and the accuracy. Returns ``(loss, (correct, count))``.
    """
    logits = model(batch["image"], rngs=step_rngs(key))
    labels = batch["label"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    mask = batch.get("mask")
    if mask is None:
        loss, correct, count = jnp.mean(ce), jnp.sum(hit), jnp.float32(labels.shape[0])
    else:
        count = jnp.sum(mask)
        loss, correct = jnp.sum(ce * mask) / jnp.maximum(count, 1.0), jnp.sum(hit * mask)
    if weight_decay:
        loss = loss + weight_decay * kernel_norm_penalty(model)
    if monotonic:
        loss = loss + monotonic_penalty(model, monotonic)
    return loss, (correct, count)


def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (a scalar bool)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def _metrics(loss, correct, count, state=None) -> dict[str, jax.Array]:
    """The step's sums and ``nonfinite``: 1 when the loss (or, after a training step, any
    floating-point entry of the updated model ``state``) is NaN or infinite, else 0. The
    flag travels with the metrics the loop reads anyway, so detecting divergence costs no
    extra host sync."""
    finite = jnp.isfinite(loss)
    if state is not None:
        finite = finite & _all_finite(state)
    return {
        "loss_sum": loss * count,
        "correct": correct.astype(jnp.int32),
        "count": count.astype(jnp.int32),
        "nonfinite": (~finite).astype(jnp.int32),
    }


@nnx.jit(donate_argnums=(0, 1), static_argnames=("weight_decay", "monotonic"))
def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    weight_decay: float = 0.0,
    monotonic: float = 0.0,
) -> dict[str, jax.Array]:
    """One optimiser step on ``batch`` (``image [B, H, W, C]``, ``label [B]``).

    ``key`` is the step key (``fold_in(root, step)``); the model is called with
    ``nnx.Rngs(sample=..., dropout=...)`` derived from it. The model and optimizer buffers are
    donated. Returns ``{"loss_sum", "correct", "count", "nonfinite"}`` of the batch, where
    ``loss_sum`` is ``B`` times the objective (so sums over batches divided by counts are
    means) and ``nonfinite`` is 1 when the loss or the updated model state holds a NaN / inf.
    """
    _TRACES["train_step"] += 1

    def loss_fn(model):
        return _objective(model, batch, key, weight_decay, monotonic)

    (loss, (correct, count)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    advance_gumbel_steps(model)  # the temperature schedule counts optimiser steps
    return _metrics(loss, correct, count, nnx.state(model))


@nnx.jit(static_argnames=("weight_decay", "monotonic"))
def eval_step(
    model: nnx.Module,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    weight_decay: float = 0.0,
    monotonic: float = 0.0,
) -> dict[str, jax.Array]:
    """Loss and number of correct predictions of ``batch`` in the model's current mode.

    Evaluation samples group elements like the reference (REFERENCE 1.8): one stochastic
    forward per batch with keys derived from ``key``. The loss includes the same penalties as
    training (REFERENCE 5.1), so validation losses are comparable for tie-breaking. An
    optional ``batch["mask"]`` marks the real examples of a padded last batch (padding keeps
    one compiled shape; in eval mode examples do not interact).
    """
    _TRACES["eval_step"] += 1
    loss, (correct, count) = _objective(model, batch, key, weight_decay, monotonic)
    return _metrics(loss, correct, count)


# ----------------------------------------------------------------------------- split state


@functools.partial(
    jax.jit, static_argnums=(0, 1), static_argnames=("weight_decay", "monotonic"),
    donate_argnums=(2, 3),
)  # fmt: skip
def _train_state(
    model_def, opt_def, model_state, opt_state, batch, key, *, weight_decay, monotonic
):
    _TRACES["train_state"] += 1
    model, optimizer = nnx.merge(model_def, model_state), nnx.merge(opt_def, opt_state)

    def loss_fn(model):
        return _objective(model, batch, key, weight_decay, monotonic)

    (loss, (correct, count)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    advance_gumbel_steps(model)  # the temperature schedule counts optimiser steps
    state = nnx.state(model)
    return state, nnx.state(optimizer), _metrics(loss, correct, count, state)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("weight_decay", "monotonic"))
def eval_state(
    model_def: nnx.GraphDef,
    model_state: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    weight_decay: float = 0.0,
    monotonic: float = 0.0,
) -> dict[str, jax.Array]:
    """:func:`eval_step` on ``nnx.split(model)`` (``model`` in eval mode); state changes of
    the forward pass (recorded kernel norms) are discarded."""
    _TRACES["eval_state"] += 1
    model = nnx.merge(model_def, model_state)
    loss, (correct, count) = _objective(model, batch, key, weight_decay, monotonic)
    return _metrics(loss, correct, count)


class StepRunner:
    """Training steps on the split state of ``model`` (train mode) and ``optimizer``.

    While training, the runner's arrays are the current state and the module objects are
    stale (their buffers are donated to the next step): call :meth:`sync` before reading
    ``model`` or ``optimizer`` (evaluation, checkpoints, logging).
    """

    def __init__(self, model, optimizer, *, weight_decay: float = 0.0, monotonic: float = 0.0):
        self.model, self.optimizer = model, optimizer
        model.train()
        self.model_def, self.model_state = nnx.split(model)
        self.opt_def, self.opt_state = nnx.split(optimizer)
        self.kwargs = dict(weight_decay=weight_decay, monotonic=monotonic)

    def __call__(self, batch: dict[str, Any], key: jax.Array) -> dict[str, jax.Array]:
        """One optimiser step; returns the metrics of :func:`train_step`."""
        self.model_state, self.opt_state, out = _train_state(
            self.model_def, self.opt_def, self.model_state, self.opt_state, batch, key,
            **self.kwargs,
        )  # fmt: skip
        return out

    def sync(self) -> None:
        """Writes the current state into the module objects."""
        nnx.update(self.model, self.model_state)
        nnx.update(self.optimizer, self.opt_state)
