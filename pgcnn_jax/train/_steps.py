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
from jax.sharding import Mesh

from pgcnn_jax.models import kernel_norm_penalty, monotonic_penalty
from pgcnn_jax.nn import DistributionParam, advance_gumbel_steps
from pgcnn_jax.train._mesh import batch_sharding, data_mesh, replicated

__all__ = [
    "PER_EXAMPLE_MODES",
    "StepRunner",
    "eval_samples_state",
    "eval_state",
    "eval_step",
    "example_keys",
    "distribution_grads",
    "sampled_log_probs",
    "step_rngs",
    "trace_counts",
    "train_step",
]

PER_EXAMPLE_MODES = ("auto", "map", "vmap")

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
    """The one train step: ``spec = (graphdef, weight_decay, monotonic)`` (static), ``state``
    of ``nnx.split((model, optimizer))`` (donated). Returns ``(new state, metrics)``."""
    _TRACES["train_step"] += 1
    graphdef, weight_decay, monotonic = spec
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
        return _objective(model, batch, key, weight_decay, monotonic)

    (loss, (correct, count)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    advance_gumbel_steps(model)  # the temperature schedule counts optimiser steps
    metrics = _metrics(loss, correct, count, nnx.state(model))
    metrics["dist_grad"] = distribution_grads(grads)  # for the per-epoch gradient SNR
    return nnx.state((model, optimizer)), metrics


def _eval_fn(spec, state, batch, key):
    """Evaluation of ``batch``: ``spec = (graphdef, weight_decay, monotonic)`` (static),
    ``state`` of ``nnx.split(model)``; state changes of the forward are discarded."""
    _TRACES["eval_state"] += 1
    graphdef, weight_decay, monotonic = spec
    model = nnx.merge(graphdef, state)
    loss, (correct, count) = _objective(model, batch, key, weight_decay, monotonic)
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
    weight_decay: float = 0.0,
    monotonic: float = 0.0,
    mesh: Mesh | None = None,
) -> dict[str, jax.Array]:
    """One optimiser step on ``batch`` (``image [B, H, W, C]``, ``label [B]``).

    ``key`` is the step key (``fold_in(root, step)``); the model is called with
    ``nnx.Rngs(sample=..., dropout=...)`` derived from it. The model and optimizer buffers are
    donated. Returns ``{"loss_sum", "correct", "count", "nonfinite", "dist_grad"}`` of the
    batch, where ``loss_sum`` is ``B`` times the objective (so sums over batches divided by
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
    spec = (graphdef, float(weight_decay), float(monotonic))
    state, out = _jitted(_train_fn, mesh)(spec, state, batch, key)
    nnx.update((model, optimizer), state)
    return out


def eval_step(
    model: nnx.Module,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    weight_decay: float = 0.0,
    monotonic: float = 0.0,
    mesh: Mesh | None = None,
) -> dict[str, jax.Array]:
    """Loss and number of correct predictions of ``batch`` in the model's current mode.

    Evaluation samples group elements like the reference (REFERENCE 1.8): one stochastic
    forward per batch with keys derived from ``key``. The loss includes the same penalties as
    training (REFERENCE 5.1), so validation losses are comparable for tie-breaking. An
    optional ``batch["mask"]`` marks the real examples of a padded last batch (padding keeps
    one compiled shape; in eval mode examples do not interact). State changes of the forward
    (recorded kernel norms) are discarded. ``mesh`` as in :func:`train_step`.
    """
    graphdef, state = nnx.split(model)
    return eval_state(
        graphdef, state, batch, key, weight_decay=weight_decay, monotonic=monotonic, mesh=mesh
    )


def eval_state(
    model_def: nnx.GraphDef,
    model_state: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    weight_decay: float = 0.0,
    monotonic: float = 0.0,
    mesh: Mesh | None = None,
) -> dict[str, jax.Array]:
    """:func:`eval_step` on ``nnx.split(model)`` (``model`` in eval mode)."""
    mesh = _mesh_or_default(mesh)
    model_state, batch, key = _place(mesh, model_state, batch, key)
    spec = (model_def, float(weight_decay), float(monotonic))
    return _jitted(_eval_fn, mesh)(spec, model_state, batch, key)


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
    mesh: Mesh | None = None,
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
      mesh: as in :func:`train_step` (batch and keys split along ``data``).

    Returns:
      ``{"loss_sum", "correct", "count"}`` of the averaged prediction (``loss_sum``: sum over
      real examples of ``-log p_b[label]`` plus the penalties) and ``pass_correct [K]``: the
      correct predictions of each single pass.
    """
    _check_samples(samples, per_example)
    mesh = _mesh_or_default(mesh)
    model_state, batch = _place(mesh, model_state, batch)
    keys = jax.device_put(keys, batch_sharding(mesh))
    spec = (model_def, samples, float(weight_decay), float(monotonic), per_example)
    return _jitted(_eval_samples_fn, mesh, 2)(spec, model_state, batch, keys)


def _eval_samples_fn(spec, model_state, batch, keys):
    model_def, samples, weight_decay, monotonic, per_example = spec
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
        weight_decay: float = 0.0,
        monotonic: float = 0.0,
        mesh: Mesh | None = None,
    ):
        self.model, self.optimizer = model, optimizer
        self.mesh = _mesh_or_default(mesh)
        self.settings = (float(weight_decay), float(monotonic))
        self._step = _jitted(_train_fn, self.mesh)
        model.train()
        self.resplit()

    def resplit(self) -> None:
        """Splits the module objects again (their current arrays become the runner's
        state, placed replicated on the mesh)."""
        graphdef, state = nnx.split((self.model, self.optimizer))
        self.spec = (graphdef, *self.settings)
        self.state = jax.device_put(state, replicated(self.mesh))

    def __call__(self, batch: dict[str, Any], key: jax.Array) -> dict[str, jax.Array]:
        """One optimiser step; returns the metrics of :func:`train_step` (not waited for).
        ``batch`` is best already placed (:func:`~pgcnn_jax.train._mesh.prefetch`)."""
        self.state, out = self._step(self.spec, self.state, *_place(self.mesh, (), batch, key)[1:])
        return out

    def sync(self) -> None:
        """Writes the current state into the module objects."""
        nnx.update((self.model, self.optimizer), self.state)
