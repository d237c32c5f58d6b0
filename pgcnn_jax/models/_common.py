"""Pieces shared by the models: widths, norms, linear layers, input checks, conv settings."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.models._config import ModelConfig
from pgcnn_jax.nn import (
    GroupBatchNorm,
    GroupFeatures,
    GroupLayerNorm,
    LiftingConv,
    SamplingSpec,
    spatial_max_pool,
)


def check_positive_int(name: str, value) -> int:
    """Raises ``ValueError`` naming ``value`` unless it is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def block_factors(factors: tuple[float, ...], num_blocks: int) -> list[float]:
    """Per-block width factors from ``block_width_factors`` read as (factor, count) pairs
    (REFERENCE 4.1): ``(1, 1, 2, 1)`` -> ``[1, 2]``; ``(1, 1, 2, 7)`` -> ``[1, 2, 2, ..., 2]``.
    The reference default ``(0.0,)`` means factor 1 for every block."""
    factors = tuple(factors)
    if len(factors) == 1 and float(factors[0]) == 0.0:
        return [1.0] * num_blocks
    if not factors or len(factors) % 2:
        raise ValueError(
            f"block_width_factors must be (factor, count) pairs or (0.0,), got {factors!r}"
        )
    out: list[float] = []
    for factor, count in zip(factors[::2], factors[1::2], strict=True):
        if float(count) != int(count) or int(count) < 1 or float(factor) <= 0:
            raise ValueError(
                f"bad (factor, count) pair ({factor!r}, {count!r}) in block_width_factors "
                f"{factors!r}"
            )
        out += [float(factor)] * int(count)
    if len(out) != num_blocks:
        raise ValueError(
            f"block_width_factors {factors!r} describe {len(out)} blocks but num_blocks = "
            f"{num_blocks}"
        )
    return out


def block_widths(config: ModelConfig) -> list[int]:
    """``[C, C f_1, ..., C f_K]``: the stem width followed by every block's output width."""
    widths = [config.width]
    for f in block_factors(config.block_width_factors, config.num_blocks):
        w = int(round(config.width * f))
        if w < 1:
            raise ValueError(f"width {config.width} x factor {f} gives {w} channels")
        widths.append(w)
    return widths


def check_block_indices(name: str, indices, low: int, high: int) -> frozenset[int]:
    """Validates ``pool_blocks`` / ``dropout_blocks`` entries to lie in ``[low, high]``."""
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not low <= i <= high:
            raise ValueError(f"{name} entries must be ints in [{low}, {high}], got {indices!r}")
    return frozenset(indices)


def make_norm(kind: str, features: int) -> nnx.Module:
    """``"batch"`` -> :class:`GroupBatchNorm`, ``"layer"`` -> :class:`GroupLayerNorm`."""
    if kind == "batch":
        return GroupBatchNorm(features)
    if kind == "layer":
        return GroupLayerNorm(features)
    raise ValueError(f"unknown norm {kind!r}; expected 'batch' or 'layer'")


def apply_norm(norm: nnx.Module, h: GroupFeatures, batch_mask: jax.Array | None) -> GroupFeatures:
    """Applies ``norm``; with a ``[B]`` ``batch_mask`` only valid batch rows enter its statistics
    (Augerino's padding copies) and invalid rows come out as zeros. The feature mask of ``h``
    is kept."""
    if batch_mask is None:
        return norm(h)
    mask = h.mask * batch_mask.reshape(-1, 1)  # [S, N] x [B, 1] -> [B, N]
    return norm(h.replace(mask=mask)).replace(mask=h.mask)


def relu(h: GroupFeatures) -> GroupFeatures:
    return h.replace_values(jax.nn.relu(h.values))


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(a: int, b: int, rngs: nnx.Rngs) -> nnx.Linear:
    """``Linear(a -> b)`` with PyTorch's default initialisation ``U(+-1/sqrt(a))`` for weight
    and bias."""
    bound = 1.0 / math.sqrt(a)
    return nnx.Linear(a, b, kernel_init=_uniform(bound), bias_init=_uniform(bound), rngs=rngs)


def check_images(x, in_features: int, model: str) -> jax.Array:
    """``x`` must be ``[B, H, W, in_features]``."""
    x = jnp.asarray(x)
    if x.ndim != 4 or x.shape[-1] != in_features:
        raise ValueError(f"{model} expects images [B, H, W, {in_features}], got shape {x.shape}")
    return x


def kernel_settings(config: ModelConfig, *, joint: bool = False) -> dict:
    """The kernel spec (:attr:`ModelConfig.kernel`) and the conv precision shared by every
    conv of a model; ``joint=True`` for the convs that only render jointly (lifting, shortcut,
    T(2) head): the same net with ``render="joint"``."""
    spec = config.kernel
    return dict(
        kernel=spec.replace(render="joint") if joint else spec,
        precision=config.precision,
    )


def sampling_spec(config: ModelConfig) -> SamplingSpec:
    """The :class:`~pgcnn_jax.nn.SamplingSpec` of a model's group convs (the lifting conv
    takes it with ``partial=False``)."""
    return SamplingSpec(
        method=config.sampling,
        partial=config.partial,
        per_layer=config.sample_per_layer,
        per_example=config.sample_per_batch_element,
        gumbel_horizon=config.gumbel_horizon,
    )


def lifting_settings(config: ModelConfig) -> dict:
    """Keyword arguments of the (always full) :class:`LiftingConv`."""
    return dict(
        group=config.make_group(),
        num_elements=config.num_elements,
        kernel_size=config.kernel_size,
        sampling=sampling_spec(config).replace(partial=False),
        **kernel_settings(config, joint=True),
    )


def group_conv_settings(config: ModelConfig, *, padding: str = "same") -> dict:
    """Keyword arguments of a model's :class:`GroupConv` layers."""
    return dict(
        group=config.make_group(),
        num_elements=config.num_elements,
        kernel_size=config.kernel_size,
        sampling=sampling_spec(config),
        padding=padding,
        **kernel_settings(config),
    )


def changes_grid(config: ModelConfig) -> bool:
    """Whether a group conv draws output elements different from its input elements, i.e. the
    block needs a pointwise shortcut even when the width is unchanged (REFERENCE 4.1 step 3).

    The reference tests ``sample_per_layer or partial``; T(2) runs (one element) are
    deterministic there, so counting only samplers that can move the grid gives the same
    layers and the pinned T(2) parameter counts for any sampling flags.
    """
    spec = sampling_spec(config)
    return spec.partial or (spec.moves and config.make_group().moves(config.num_elements))


def init_stem(model: nnx.Module, config: ModelConfig, in_features: int, num_classes: int, rngs):
    """The part of a model's constructor CKResNet and GCNN share: ``config``,
    ``in_features``, ``num_classes``, the lifting conv ``lift``, ``stem_norm`` and
    ``stem_pool``. Returns ``(widths, pool block indices)``."""
    model.config = config
    model.in_features = check_positive_int("in_features", in_features)
    model.num_classes = check_positive_int("num_classes", num_classes)
    widths = block_widths(config)
    pools = check_block_indices("pool_blocks", config.pool_blocks, 0, config.num_blocks)
    model.stem_pool = 0 in pools
    model.lift = LiftingConv(in_features, widths[0], **lifting_settings(config), rngs=rngs)
    model.stem_norm = make_norm(config.norm, widths[0])
    return widths, pools


def forward_blocks(
    model: nnx.Module, x, *, rngs: nnx.Rngs | None, batch_mask: jax.Array | None, name: str
) -> GroupFeatures:
    """``x [B, H, W, C_in]`` through the stem of :func:`init_stem` (lift, norm, optional
    pool, ReLU) and ``model.blocks``."""
    x = check_images(x, model.in_features, name)
    h = apply_norm(model.stem_norm, model.lift(x, rngs=rngs), batch_mask)
    if model.stem_pool:
        h = spatial_max_pool(h)
    h = relu(h)
    for block in model.blocks:
        h = block(h, rngs=rngs, batch_mask=batch_mask)
    return h
