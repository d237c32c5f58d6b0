"""The jit-compiled train and evaluation steps (STYLE 9, REFERENCE 5.1).

Two forms of the same computation:

* :func:`train_step` / :func:`eval_step`: ``nnx.jit`` over ``(model, optimizer, ...)``, the
  public NNX-style API.
* :class:`StepRunner` / :func:`eval_state`: ``jax.jit`` over the split state, used by the
  training loop. ``nnx.jit`` walks the whole module graph on every call (about 10 ms for a
  CKResNet with its optimizer, more than many GPU steps); the runner splits once per session.

:func:`eval_samples_state` / :func:`sampled_log_probs` are the ``K``-sample evaluation
(DESIGN 5): each example is evaluated on its own with its own keys, and the prediction is the
mean softmax of ``K`` passes.
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

__all__ = [
    "PER_EXAMPLE_MODES",
    "StepRunner",
    "eval_samples_state",
    "eval_state",
    "eval_step",
    "example_keys",
    "sampled_log_probs",
    "step_rngs",
    "trace_counts",
    "train_step",
]

PER_EXAMPLE_MODES = ("auto", "map", "vmap")

_TRACES: collections.Counter[str] = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How often each step function was traced in this process (``train_step``,
    ``eval_step``, ``train_state``, ``eval_state``, ``eval_samples_state``): a retracing guard
    for tests, since new data and keys of the same shapes must not retrace."""
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


def example_keys(key: jax.Array, start: int | jax.Array, size: int) -> jax.Array:
    """``[size]`` keys ``fold_in(key, start + j)``: the keys of examples ``start ...`` of a split,
    a function of each example's index only (not of the batch it travels in)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(size))


def _check_samples(samples: Any, per_example: str) -> None:
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    if per_example not in PER_EXAMPLE_MODES:
        raise ValueError(f"per_example must be one of {PER_EXAMPLE_MODES}, got {per_example!r}")


def _pass_outputs(
    model_def, model_state, images, keys, samples, per_example, weight_decay, monotonic
):
    """Logits ``[K, B, classes]`` and penalties ``[K, B]`` of ``K`` single-example passes.

    Pass ``k`` of example ``b`` runs the model on that example alone with the step key
    ``fold_in(keys[b], k)``; state changes of the forward (kernel norms) are discarded.
    """
    _check_samples(samples, per_example)
    b = images.shape[0]
    if keys.shape != (b,):
        raise ValueError(f"keys must have shape ({b},) (one per example), got {keys.shape}")
    # Pass-major order: entry k * B + b is pass k of example b.
    pass_keys = jax.vmap(lambda k: jax.vmap(lambda kb: jax.random.fold_in(kb, k))(keys))(
        jnp.arange(samples)
    ).reshape(samples * b)
    pass_images = jnp.broadcast_to(images, (samples, *images.shape)).reshape(-1, *images.shape[1:])

    def one(args):
        image, key = args
        # Fresh Variables at this trace level (the forward writes its kernel norms).
        model = nnx.merge(model_def, jax.tree.map(lambda v: v, model_state))
        logits = model(image[None], rngs=step_rngs(key))[0]
        penalty = jnp.zeros((), jnp.float32)
        if weight_decay:
            penalty = penalty + weight_decay * kernel_norm_penalty(model)
        if monotonic:
            penalty = penalty + monotonic_penalty(model, monotonic)
        return logits, penalty

    if per_example == "auto":
        per_example = "map" if jax.default_backend() == "cpu" else "vmap"
    # "map": one example pass after another (XLA:CPU runs per-example kernels fastest as a
    # loop of plain convs, see pgcnn_jax.nn.conv2d); "vmap": B passes at a time.
    logits, penalty = jax.lax.map(
        one, (pass_images, pass_keys), batch_size=b if per_example == "vmap" else None
    )
    return logits.reshape(samples, b, -1), penalty.reshape(samples, b)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("samples", "per_example"))
def _log_probs_state(model_def, model_state, images, keys, *, samples, per_example):
    logits, _ = _pass_outputs(model_def, model_state, images, keys, samples, per_example, 0, 0)
    return jax.nn.log_softmax(logits, axis=-1)


def sampled_log_probs(
    model: nnx.Module,
    images: jax.typing.ArrayLike,
    keys: jax.Array,
    *,
    samples: int,
    per_example: str = "auto",
) -> jax.Array:
    """Log-softmax ``[K, B, classes]`` of ``K = samples`` passes of every example on its own.

    Pass ``k`` of example ``b`` calls ``model`` (in its current mode; use ``model.eval()``) on
    ``images[b:b+1]`` with :func:`step_rngs` of ``fold_in(keys[b], k)``: each example's sampled
    group elements depend on its key only, never on the other examples of ``images`` or their
    order. ``keys``: ``[B]`` (e.g. :func:`example_keys` of a split key). ``per_example``:
    ``"map"`` runs the ``K B`` passes one after another, ``"vmap"`` ``B`` at a time, ``"auto"``
    loops on CPU and batches on accelerators; same numbers.
    """
    model_def, model_state = nnx.split(model)
    return _log_probs_state(
        model_def,
        model_state,
        jnp.asarray(images),
        keys,
        samples=samples,
        per_example=per_example,
    )


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("samples", "weight_decay", "monotonic", "per_example"),
)
def eval_samples_state(
    model_def: nnx.GraphDef,
    model_state: Any,
    batch: dict[str, jax.Array],
    keys: jax.Array,
    *,
    samples: int,
    weight_decay: float = 0.0,
    monotonic: float = 0.0,
    per_example: str = "auto",
) -> dict[str, jax.Array]:
    """``K``-sample evaluation of ``batch`` with per-example samples (DESIGN 5).

    The passes are those of :func:`sampled_log_probs`; the prediction is their mean softmax

    .. math:: \\bar p_b = \\frac1K \\sum_{k<K} \\mathrm{softmax}(f(x_b; \\xi_{b,k})).

    Args:
      model_def, model_state: ``nnx.split(model)`` (``model`` in eval mode).
      batch: ``image [B, H, W, C]``, ``label [B]``, optional ``mask [B]`` (1 = real example).
      keys: ``[B]`` per-example keys (:func:`example_keys`).
      samples: ``K >= 1``.
      weight_decay, monotonic: penalty weights; the loss adds their mean over the passes of
        each example (each pass renders its own kernels), as :func:`eval_step` adds them once.
      per_example: as in :func:`sampled_log_probs`.

    Returns:
      ``{"loss_sum", "correct", "count"}`` of the averaged prediction (``loss_sum``: sum over
      real examples of ``-log p_b[label]`` plus the penalties) and ``pass_correct [K]``: the
      correct predictions of each single pass.
    """
    _TRACES["eval_samples_state"] += 1
    images, labels = batch["image"], batch["label"]
    b = labels.shape[0]
    mask = batch.get("mask")
    mask = jnp.ones((b,), jnp.float32) if mask is None else mask.astype(jnp.float32)
    logits, penalty = _pass_outputs(
        model_def, model_state, images, keys, samples, per_example, weight_decay, monotonic
    )
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # [K, B, C]
    mean_log_probs = jax.nn.logsumexp(log_probs, axis=0) - jnp.log(samples)  # log of mean p
    nll = -jnp.take_along_axis(mean_log_probs, labels[:, None], axis=-1)[:, 0]
    count = jnp.sum(mask)
    hit = (jnp.argmax(mean_log_probs, axis=-1) == labels).astype(jnp.float32)
    pass_hit = (jnp.argmax(logits, axis=-1) == labels[None]).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum((nll + jnp.mean(penalty, axis=0)) * mask),
        "correct": jnp.sum(hit * mask).astype(jnp.int32),
        "count": count.astype(jnp.int32),
        "pass_correct": jnp.sum(pass_hit * mask[None], axis=1).astype(jnp.int32),
    }


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
