"""The jit-compiled train and evaluation steps (STYLE 9, REFERENCE 5.1).

One jitted train step (``_train_fn``) over the split state ``nnx.split((model, optimizer))``
with explicit shardings over a device mesh (:mod:`pgcnn_jax.train._mesh`: the batch split
along ``data``, state and outputs replicated; BatchNorm statistics are those of the global
batch). Two ways to call it:

* :func:`train_step` / :func:`eval_step`: over ``(model, optimizer, ...)``, the public
  NNX-style API, splitting and merging the modules around the jitted function.
* :class:`StepRunner` / :func:`eval_state`: on the split state held once, used by the
  training loop (splitting walks the whole module graph, about 10 ms for a CKResNet with its
  optimizer, more than many GPU steps).

The loss is the cross-entropy plus the penalties of an :class:`~pgcnn_jax.train.Objective`
(a static argument: one compiled step per objective). The ``K``-sample evaluation is in
:mod:`pgcnn_jax.train._sampled`.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from pgcnn_jax.nn import DistributionParam, advance_gumbel_steps
from pgcnn_jax.train._mesh import batch_sharding, data_mesh, replicated
from pgcnn_jax.train._specs import Objective

__all__ = [
    "StepRunner",
    "eval_state",
    "eval_step",
    "distribution_grads",
    "step_rngs",
    "trace_counts",
    "train_step",
]

_TRACES: collections.Counter[str] = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How often each step function was traced in this process (``train_step``: the one
    train step of :func:`train_step` and :class:`StepRunner`; ``eval_state``: that of
    :func:`eval_step` and :func:`eval_state`; ``eval_samples_state``): a retracing guard for
    tests, since new data and keys of the same shapes must not retrace."""
    return dict(_TRACES)


def step_rngs(key: jax.Array) -> nnx.Rngs:
    """``nnx.Rngs`` with the ``sample`` and ``dropout`` streams a model call needs, both derived
    from one step key."""
    k_sample, k_dropout = jax.random.split(key)
    return nnx.Rngs(sample=k_sample, dropout=k_dropout)


def _objective(model, batch, key, objective: Objective):
    """Cross-entropy + the penalties of ``objective`` (REFERENCE 5.1, 4.5).

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
    return objective.penalized(loss, model), (correct, count)


def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (a scalar bool)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def distribution_grads(grads: nnx.State) -> jax.Array:
    """The gradients of every :class:`~pgcnn_jax.nn.DistributionParam` in ``grads`` as one flat
    float32 vector, in the path order of ``nnx.state(model, DistributionParam)`` (the order of
    :func:`pgcnn_jax.train.distribution_entries`); empty for a model without any."""
    leaves = jax.tree.leaves(grads.filter(DistributionParam))
    if not leaves:
        return jnp.zeros((0,), jnp.float32)
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])


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


def _train_fn(spec, state, batch, key):
    """The one train step: ``spec = (graphdef, objective)`` (static), ``state`` of
    ``nnx.split((model, optimizer))`` (donated). Returns ``(new state, metrics)``."""
    _TRACES["train_step"] += 1
    graphdef, objective = spec
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
        return _objective(model, batch, key, objective)

    (loss, (correct, count)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    advance_gumbel_steps(model)  # the temperature schedule counts optimiser steps
    metrics = _metrics(loss, correct, count, nnx.state(model))
    metrics["dist_grad"] = distribution_grads(grads)  # for the per-epoch gradient SNR
    return nnx.state((model, optimizer)), metrics


def _eval_fn(spec, state, batch, key):
    """Evaluation of ``batch``: ``spec = (graphdef, objective)`` (static), ``state`` of
    ``nnx.split(model)``; state changes of the forward are discarded."""
    _TRACES["eval_state"] += 1
    graphdef, objective = spec
    model = nnx.merge(graphdef, state)
    loss, (correct, count) = _objective(model, batch, key, objective)
    return _metrics(loss, correct, count)


@functools.cache
def _jitted(fn, mesh: Mesh, num_sharded: int = 1):
    """``fn(spec, state, *args)`` under ``jax.jit`` on ``mesh``: ``spec`` static, the state
    replicated, the first ``num_sharded`` of ``args`` split along the batch axis, the rest
    and the outputs replicated; the train step donates its state. One compiled program per
    ``(mesh, spec)``: a model whose static attributes change compiles a new step, equal
    specs share one."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    donate = (1,) if fn is _train_fn else ()
    return jax.jit(
        fn,
        static_argnums=0,
        donate_argnums=donate,
        in_shardings=(rep, data) + (data,) * (num_sharded - 1) + (rep,) * (2 - num_sharded),
        out_shardings=rep,
    )


def _mesh_or_default(mesh: Mesh | None) -> Mesh:
    return data_mesh(1) if mesh is None else mesh


def _place(mesh: Mesh, state: Any, batch: Any, *more: Any) -> tuple:
    """``state`` (and ``more``) replicated and ``batch`` split on ``mesh``, as the jitted
    steps take them (a no-op for arrays already there). The mesh is part of an array's type:
    placing every call's arguments alike keeps one compiled step for all calls."""
    rep = replicated(mesh)
    return (
        jax.device_put(state, rep),
        jax.device_put(batch, batch_sharding(mesh)),
        *(jax.device_put(x, rep) for x in more),
    )


def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    objective: Objective = Objective(),
    mesh: Mesh | None = None,
) -> dict[str, jax.Array]:
    """One optimiser step on ``batch`` (``image [B, H, W, C]``, ``label [B]``).

    ``key`` is the step key (``fold_in(root, step)``); the model is called with
    ``nnx.Rngs(sample=..., dropout=...)`` derived from it. The model and optimizer buffers are
    donated. The loss is the cross-entropy plus the penalties of ``objective``. Returns
    ``{"loss_sum", "correct", "count", "nonfinite", "dist_grad"}`` of the batch, where
    ``loss_sum`` is ``B`` times the objective (so sums over batches divided by
    counts are means), ``nonfinite`` is 1 when the loss or the updated model state holds a
    NaN / inf, and ``dist_grad`` is the step's gradient of the distribution parameters
    (:func:`distribution_grads`).

    ``mesh``: a :func:`~pgcnn_jax.train.data_mesh`; the batch is split along its ``data``
    axis (``B`` a multiple of its size), model and optimizer replicated, and batch statistics
    (BatchNorm) are those of the whole batch. ``None``: the first device. The same jitted
    function as :class:`StepRunner`'s, splitting and merging the modules around it.
    """
    mesh = _mesh_or_default(mesh)
    graphdef, state = nnx.split((model, optimizer))
    state, batch, key = _place(mesh, state, batch, key)
    state, out = _jitted(_train_fn, mesh)((graphdef, objective), state, batch, key)
    nnx.update((model, optimizer), state)
    return out


def eval_step(
    model: nnx.Module,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    objective: Objective = Objective(),
    mesh: Mesh | None = None,
) -> dict[str, jax.Array]:
    """Loss and number of correct predictions of ``batch`` in the model's current mode.

    Evaluation samples group elements like the reference (REFERENCE 1.8): one stochastic
    forward per batch with keys derived from ``key``. The loss includes the penalties of
    ``objective`` as training does (REFERENCE 5.1), so validation losses are comparable for
    tie-breaking. An optional ``batch["mask"]`` marks the real examples of a padded last batch
    (padding keeps one compiled shape; in eval mode examples do not interact). State changes
    of the forward (recorded kernel norms) are discarded. ``mesh`` as in :func:`train_step`.
    """
    graphdef, state = nnx.split(model)
    return eval_state(graphdef, state, batch, key, objective=objective, mesh=mesh)


def eval_state(
    model_def: nnx.GraphDef,
    model_state: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    objective: Objective = Objective(),
    mesh: Mesh | None = None,
) -> dict[str, jax.Array]:
    """:func:`eval_step` on ``nnx.split(model)`` (``model`` in eval mode)."""
    mesh = _mesh_or_default(mesh)
    model_state, batch, key = _place(mesh, model_state, batch, key)
    return _jitted(_eval_fn, mesh)((model_def, objective), model_state, batch, key)


class StepRunner:
    """Training steps on the split state of ``model`` (train mode) and ``optimizer``, held
    once (replicated on ``mesh``) and run by the jitted function of :func:`train_step`.

    While training, the runner's arrays are the current state and the module objects are
    stale (their buffers are donated to the next step): call :meth:`sync` before reading
    ``model`` or ``optimizer`` (evaluation, checkpoints, logging). A model whose static
    attributes change between steps (e.g. per-layer element counts): :meth:`sync`, change the
    modules, :meth:`resplit`; the next step compiles for the new graph (cached per graph).
    """

    def __init__(
        self,
        model: nnx.Module,
        optimizer: nnx.Optimizer,
        *,
        objective: Objective = Objective(),
        mesh: Mesh | None = None,
    ):
        self.model, self.optimizer = model, optimizer
        self.mesh = _mesh_or_default(mesh)
        self.objective = objective
        self._step = _jitted(_train_fn, self.mesh)
        model.train()
        self.resplit()

    def resplit(self) -> None:
        """Splits the module objects again (their current arrays become the runner's
        state, placed replicated on the mesh)."""
        graphdef, state = nnx.split((self.model, self.optimizer))
        self.spec = (graphdef, self.objective)
        self.state = jax.device_put(state, replicated(self.mesh))

    def __call__(self, batch: dict[str, Any], key: jax.Array) -> dict[str, jax.Array]:
        """One optimiser step; returns the metrics of :func:`train_step` (not waited for).
        ``batch`` is best already placed (:func:`~pgcnn_jax.train._mesh.prefetch`)."""
        self.state, out = self._step(self.spec, self.state, *_place(self.mesh, (), batch, key)[1:])
        return out

    def sync(self) -> None:
        """Writes the current state into the module objects."""
        nnx.update((self.model, self.optimizer), self.state)
