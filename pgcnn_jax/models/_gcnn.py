"""GCNN: the "13-layer CNN" of Table 5 as a (partial) G-CNN (REFERENCE 4.3).

Layout, with ``[B, H, W, N, C]`` group features::

    lift (in -> C) -> norm -> [2x2 max-pool if 0 in pool_blocks] -> ReLU
    K x block: group conv -> norm -> ReLU -> [max-pool] -> [channel dropout]
    head: masked mean over (N, H, W) -> Linear(width -> classes)

The paper configs use ``C = 128``, ``block_width_factors = (1, 1, 2, 7)`` (widths
128, 128, 256 x 7), ``pool_blocks = (2, 5)``, ``dropout_blocks = (2, 5, 8)`` and 3x3 SIREN
kernels with 8 hidden units. Channel dropout (``Dropout2d`` on a 5-D tensor in PyTorch 1.9)
draws one Bernoulli per (sample, channel), shared over ``(N, H, W)``, and scales survivors by
``1 / (1 - p)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.models._common import (
    apply_norm,
    check_block_indices,
    forward_blocks,
    group_conv_settings,
    init_stem,
    make_norm,
    relu,
    torch_linear,
)
from pgcnn_jax.models._config import ModelConfig
from pgcnn_jax.nn import GroupConv, GroupFeatures, group_mean_pool, spatial_max_pool


class GCNNBlock(nnx.Module):
    """``group conv -> norm -> ReLU -> [max-pool] -> [channel dropout]``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        config: ModelConfig,
        *,
        pool: bool,
        dropout: bool,
        rngs: nnx.Rngs,
    ):
        self.conv = GroupConv(in_features, out_features, **group_conv_settings(config), rngs=rngs)
        self.norm = make_norm(config.norm, out_features)
        self.pool = pool
        rate = config.dropout if dropout else 0.0
        # [B, H, W, N, C]: one draw per (sample, channel)
        self.dropout = nnx.Dropout(rate, broadcast_dims=(1, 2, 3))

    def __call__(
        self, h: GroupFeatures, *, rngs: nnx.Rngs | None, batch_mask: jax.Array | None = None
    ) -> GroupFeatures:
        h = relu(apply_norm(self.norm, self.conv(h, rngs=rngs), batch_mask))
        if self.pool:
            h = spatial_max_pool(h)
        return h.replace_values(self.dropout(h.values, rngs=rngs))


class GCNN(nnx.Module):
    """Plain stack of (partial) group convolutions (REFERENCE 4.3, Table 5).

    ``__call__(x [B, H, W, C_in], *, rngs) -> logits [B, num_classes]``; ``rngs`` carries a
    ``sample`` stream (Monte Carlo elements) and a ``dropout`` stream. Only ``head="pool"``
    (the mean readout) is defined for this model.
    """

    def __init__(self, config: ModelConfig, *, num_classes: int, in_features: int, rngs):
        if config.head != "pool":
            raise ValueError(f"GCNN supports head='pool' (mean readout) only, got {config.head!r}")
        widths, pools = init_stem(self, config, in_features, num_classes, rngs)
        drops = check_block_indices("dropout_blocks", config.dropout_blocks, 1, config.num_blocks)
        self.blocks = nnx.List(
            [
                GCNNBlock(a, b, config, pool=i + 1 in pools, dropout=i + 1 in drops, rngs=rngs)
                for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
            ]
        )
        self.classifier = torch_linear(widths[-1], num_classes, rngs)

    def group_convs(self) -> list[tuple[str, GroupConv]]:
        """The group convs in registration order: ``block1.conv, ..., blockK.conv``."""
        return [(f"block{i + 1}.conv", block.conv) for i, block in enumerate(self.blocks)]

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        rngs: nnx.Rngs | None = None,
        batch_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Logits ``[B, num_classes]``. ``batch_mask`` (``[B]``, optional) excludes rows from
        normalisation statistics (used by the Augerino wrapper for its padding copies)."""
        h = forward_blocks(self, x, rngs=rngs, batch_mask=batch_mask, name="GCNN")
        pooled = jnp.mean(group_mean_pool(h), axis=(1, 2))  # masked mean over (N, H, W)
        return self.classifier(pooled)
