"""The ``K``-sample evaluation (DESIGN 5): each example is evaluated on its own with its own
keys, and the prediction is the mean softmax of ``K`` passes."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from pgcnn_jax.train._mesh import batch_sharding
from pgcnn_jax.train._specs import Objective, check_per_example, check_samples
from pgcnn_jax.train._steps import _TRACES, _jitted, _mesh_or_default, _place, step_rngs

__all__ = ["eval_samples_state", "example_keys", "sampled_log_probs"]


def example_keys(key: jax.Array, start: int | jax.Array, size: int) -> jax.Array:
    """``[size]`` keys ``fold_in(key, start + j)``: the keys of examples ``start ...`` of a split,
    a function of each example's index only (not of the batch it travels in)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(size))


def _check_samples(samples: Any, per_example: str) -> None:
    check_samples("samples", samples)
    check_per_example(per_example)


def _pass_outputs(model_def, model_state, images, keys, samples, per_example, objective):
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
        return logits, objective.penalty(model)

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
    logits, _ = _pass_outputs(
        model_def, model_state, images, keys, samples, per_example, Objective()
    )
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
    objective: Objective = Objective(),
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
      objective: the penalties; the loss adds their mean over the passes of each example (each
        pass renders its own kernels), as :func:`~pgcnn_jax.train.eval_step` adds them once.
      per_example: as in :func:`sampled_log_probs`.
      mesh: as in :func:`~pgcnn_jax.train.train_step` (batch and keys split along ``data``).

    Returns:
      ``{"loss_sum", "correct", "count"}`` of the averaged prediction (``loss_sum``: sum over
      real examples of ``-log p_b[label]`` plus the penalties) and ``pass_correct [K]``: the
      correct predictions of each single pass.
    """
    _check_samples(samples, per_example)
    mesh = _mesh_or_default(mesh)
    model_state, batch = _place(mesh, model_state, batch)
    keys = jax.device_put(keys, batch_sharding(mesh))
    spec = (model_def, samples, objective, per_example)
    return _jitted(_eval_samples_fn, mesh, 2)(spec, model_state, batch, keys)


def _eval_samples_fn(spec, model_state, batch, keys):
    model_def, samples, objective, per_example = spec
    _TRACES["eval_samples_state"] += 1
    images, labels = batch["image"], batch["label"]
    b = labels.shape[0]
    mask = batch.get("mask")
    mask = jnp.ones((b,), jnp.float32) if mask is None else mask.astype(jnp.float32)
    logits, penalty = _pass_outputs(
        model_def, model_state, images, keys, samples, per_example, objective
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
