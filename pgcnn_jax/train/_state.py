"""Model and optimizer construction, parameter groups and state (de)serialisation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pgcnn_jax.data import get_spec
from pgcnn_jax.models import AugmentationParam, build_model, partial_layers
from pgcnn_jax.nn import DistributionParam, GumbelHorizon, distribution_values, layer_name
from pgcnn_jax.train._config import TrainConfig
from pgcnn_jax.train._schedule import schedule_for

__all__ = [
    "MAIN_LABEL",
    "PROBS_LABEL",
    "augmentation_values",
    "create_model",
    "create_optimizer",
    "distribution_entries",
    "get_pure_state",
    "grad_snr_by_layer",
    "layer_summary",
    "make_optimizer",
    "param_labels",
    "root_key",
    "set_pure_state",
]

PROBS_LABEL, MAIN_LABEL = "probs", "main"

# Salts of the key streams derived from the seed (fold_in of the root key).
INIT_SALT, TRAIN_SALT, EVAL_SALT, TEST_SALT = 0, 1, 2, 3


def root_key(seed: int, salt: int) -> jax.Array:
    """``fold_in(key(seed), salt)``: one independent stream per purpose."""
    return jax.random.fold_in(jax.random.key(seed), salt)


def create_model(config: TrainConfig) -> nnx.Module:
    """Builds ``config.model`` for ``config.dataset`` with keys derived from ``config.seed``."""
    spec = get_spec(config.dataset)
    return build_model(
        config.model,
        num_classes=spec.num_classes,
        in_features=spec.image_shape[-1],
        rngs=nnx.Rngs(root_key(config.seed, INIT_SALT)),
    )


def param_labels(model: nnx.Module) -> Any:
    """A prefix tree of ``nnx.state(model, nnx.Param)`` labelling every
    :class:`~pgcnn_jax.nn.DistributionParam` :data:`PROBS_LABEL` and every other parameter
    :data:`MAIN_LABEL` (Augerino's augmentation parameters included, REFERENCE 5.2 / 4.4)."""
    return jax.tree.map(
        lambda v: PROBS_LABEL if isinstance(v, DistributionParam) else MAIN_LABEL,
        nnx.state(model, nnx.Param),
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def make_optimizer(
    config: TrainConfig, labels: Any, *, steps_per_epoch: int | None = None
) -> tuple[optax.GradientTransformation, optax.Schedule, optax.Schedule]:
    """Adam (b1 0.9, b2 0.999, eps 1e-8, no weight decay) with its own schedule per group, after
    optional global-norm clipping (REFERENCE 5.2). Returns ``(tx, lr, lr_probs)``.

    ``steps_per_epoch``: schedule steps per epoch (see :func:`schedule_for`; ``None``: the
    dataset's nominal size)."""
    lr = schedule_for(config, config.lr, steps_per_epoch=steps_per_epoch)
    lr_probs = schedule_for(config, config.lr_probs_or_lr, steps_per_epoch=steps_per_epoch)
    adam = dict(b1=0.9, b2=0.999, eps=1e-8)
    tx = optax.multi_transform(
        {MAIN_LABEL: optax.adam(lr, **adam), PROBS_LABEL: optax.adam(lr_probs, **adam)}, labels
    )
    if config.gradient_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.gradient_clip), tx)
    return tx, lr, lr_probs


class _SettingsTransformation:
    """An optax transformation that compares equal to any other built from the same
    settings (hash and ``==`` by ``settings``).

    The transformation is a static attribute of the optimizer's graph, part of the jitted
    train step's cache key: two optimizers of equal settings (a second run of a config in a
    process) then hit the step compiled for the first instead of retracing it.
    """

    def __init__(self, settings: tuple, tx: optax.GradientTransformation):
        self.settings, self.tx = settings, tx

    def init(self, params):
        return self.tx.init(params)

    def update(self, updates, state, params=None, **extra):
        return self.tx.update(updates, state, params, **extra)

    def __eq__(self, other) -> bool:
        return isinstance(other, _SettingsTransformation) and other.settings == self.settings

    def __hash__(self) -> int:
        return hash(self.settings)

    def __repr__(self) -> str:
        return f"_SettingsTransformation{self.settings!r}"


def create_optimizer(
    config: TrainConfig, model: nnx.Module, *, steps_per_epoch: int | None = None
) -> nnx.Optimizer:
    """``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with the transformation of
    :func:`make_optimizer` (``steps_per_epoch`` as there: the training loop passes the steps
    per epoch of the data it loaded).

    The transformation compares equal to that of any optimizer of equal settings (learning
    rates, schedule lengths, clipping, parameter labels), so a second run of the same config
    in a process reuses the compiled train step instead of retracing and recompiling it.
    """
    labels = param_labels(model)
    flat, _ = jax.tree_util.tree_flatten_with_path(labels)
    i = config.steps_per_nominal_epoch if steps_per_epoch is None else steps_per_epoch
    cosine = config.scheduler == "cosine"  # a constant schedule does not depend on epochs
    settings = (
        config.lr,
        config.lr_probs_or_lr,
        config.scheduler,
        config.warmup_epochs * i if cosine else None,
        (config.epochs - config.warmup_epochs) * i if cosine else None,
        config.lr_min if cosine else None,
        config.gradient_clip,
        tuple((jax.tree_util.keystr(path), label) for path, label in flat),
    )
    tx = make_optimizer(config, labels, steps_per_epoch=steps_per_epoch)[0]
    return nnx.Optimizer(model, _SettingsTransformation(settings, tx), wrt=nnx.Param)


# ---------------------------------------------------------------------------- state


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


# The Gumbel horizons come from the config (create_model), so checkpoints leave them out:
# checkpoints written before the horizon became state still restore.
_CHECKPOINTED = nnx.Not(GumbelHorizon)


def get_pure_state(node: Any) -> Any:
    """``nnx.state(node)`` as a pure dict of arrays (PRNG keys as raw key data), for orbax;
    without the Gumbel horizons (derived from the config)."""
    pure = nnx.to_pure_dict(nnx.state(node, _CHECKPOINTED))
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, pure)


def set_pure_state(node: Any, pure: Any) -> None:
    """Inverse of :func:`get_pure_state`: writes the arrays of ``pure`` into ``node``."""
    state = nnx.state(node, _CHECKPOINTED)
    template = nnx.to_pure_dict(state)
    pure = jax.tree.map(
        lambda t, x: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
        template,
        pure,
    )
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(node, state)


# ---------------------------------------------------------------------------- logging


#: The per-layer columns of ``metrics.jsonl`` / ``results.json`` that predate ``axes``, each
#: the learned width of one axis of the group (``None`` for a layer whose group lacks the
#: axis or does not learn its width): column name -> axis name.
AXIS_COLUMNS = {"theta": "rotation", "mirror_prob": "mirror"}


def layer_summary(model: nnx.Module) -> dict[str, list]:
    """Per partial layer (module order): its element count ``N'`` and ``axes``, every axis of
    the group with its kept count and learned width (:meth:`pgcnn_jax.groups.Group.summarize`,
    the one N' rule, shared with the subset analysis), plus the :data:`AXIS_COLUMNS` read
    from the axes (``theta``: the rotation width, ``mirror_prob``: the mirror probability)."""
    names, elements, axes = [], [], []
    for name, layer in partial_layers(model):
        params = {k: np.asarray(v) for k, v in jax.device_get(distribution_values(layer)).items()}
        summary = layer.group.summarize(layer.num_elements, params)
        names.append(name)
        elements.append(summary.num_elements)
        axes.append({k: dict(v) for k, v in summary.axes.items()})
    columns = {
        column: [a.get(axis, {}).get("width") for a in axes]
        for column, axis in AXIS_COLUMNS.items()
    }
    return {"layers": names, **columns, "elements": elements, "axes": axes}


def augmentation_values(model: nnx.Module) -> list[float]:
    """Flat values of Augerino's augmentation parameters (empty for other models)."""
    leaves = jax.tree.leaves(nnx.state(model, AugmentationParam))
    return [float(v) for leaf in leaves for v in np.asarray(leaf).ravel()]


def distribution_entries(model: nnx.Module) -> list[tuple[str, str, int]]:
    """One ``(layer name, parameter name, size)`` per :class:`~pgcnn_jax.nn.DistributionParam`
    of ``model``, in the order of :func:`pgcnn_jax.train.distribution_grads`'s flat vector."""
    return [
        (layer_name(path[:-1]), str(path[-1]), int(np.size(var[...])))
        for path, var in nnx.to_flat_state(nnx.state(model, DistributionParam))
    ]


def grad_snr_by_layer(model: nnx.Module, values: np.ndarray) -> list[dict[str, Any]]:
    """``values`` (one per entry of the flat distribution-gradient vector, e.g.
    :meth:`~pgcnn_jax.train.MetricSums.grad_snr`) per partial layer in
    :func:`layer_summary` order: ``{parameter name: float}`` (a list for a vector parameter
    such as the per-element keep logits); empty dicts for an empty ``values`` (a pass without
    training steps). ``ValueError`` if the sizes do not match."""
    entries = distribution_entries(model)
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:  # no training step in the pass: no statistics
        return [{} for _ in partial_layers(model)]
    if values.size != sum(n for _, _, n in entries):
        raise ValueError(
            f"{values.size} gradient statistics for distribution parameters of sizes "
            f"{[n for _, _, n in entries]}"
        )
    by_layer: dict[str, dict[str, Any]] = {}
    start = 0
    for layer, name, n in entries:
        chunk = [float(v) for v in values[start : start + n]]
        by_layer.setdefault(layer, {})[name] = chunk[0] if n == 1 else chunk
        start += n
    return [by_layer.get(name, {}) for name, _ in partial_layers(model)]
