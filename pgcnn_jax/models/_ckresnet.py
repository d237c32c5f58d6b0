"""CKResNet: the residual continuous-kernel (partial) G-CNN of Tables 1-4 (REFERENCE 4.1-4.2).

Layout, with ``[B, H, W, N, C]`` group features::

    lift (in -> C) -> norm -> [2x2 max-pool if 0 in pool_blocks] -> ReLU
    K x block:  conv1 -> LN(N,H,W) -> ReLU -> Dropout -> conv2 -> LN(N,H,W) -> ReLU
                (+ pointwise shortcut, or identity) -> norm -> [max-pool] -> ReLU
    head:       [T(2): mean over N] -> final conv (valid) -> norm -> ReLU
                -> max over (N, H, W) | learnable pooling -> Linear(width -> classes)

``LN(N,H,W)`` is the parameter-free in-block layer norm; ``norm`` is BatchNorm3d or
GroupNorm(1) as configured. Every reduction over the group axis honours the mask of partial
layers (DESIGN 4).
"""

from __future__ import annotations

import jax
from flax import nnx

from pgcnn_jax.models._common import (
    apply_norm,
    changes_grid,
    forward_blocks,
    group_conv_settings,
    init_stem,
    kernel_settings,
    make_norm,
    relu,
    torch_linear,
)
from pgcnn_jax.models._config import ModelConfig
from pgcnn_jax.models._heads import MLPPooling, T2FinalConv, global_max_pool
from pgcnn_jax.nn import (
    GroupConv,
    GroupFeatures,
    PointwiseGroupConv,
    layer_norm_nhw,
    rendered_kernel_size,
    spatial_max_pool,
)


class ResBlock(nnx.Module):
    """One CKResNet block (REFERENCE 4.1), ``[B, H, W, N, C_in] -> [B, H', W', N', C_out]``.

    The shortcut is a :class:`PointwiseGroupConv` (no bias, kernel hidden ``H // 2``) onto
    conv2's elements when the width changes or conv2 draws its own elements; else identity.
    """

    def __init__(
        self, in_features: int, out_features: int, config: ModelConfig, *, pool: bool, rngs
    ):
        conv = group_conv_settings(config)
        self.conv1 = GroupConv(in_features, out_features, **conv, rngs=rngs)
        self.conv2 = GroupConv(out_features, out_features, **conv, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout)
        shortcut = None
        if in_features != out_features or changes_grid(config):
            kernel = kernel_settings(config, joint=True)
            kernel["kernel"] = kernel["kernel"].replace(hidden=config.kernel.hidden // 2)
            shortcut = PointwiseGroupConv(
                in_features, out_features, group=config.make_group(), **kernel, rngs=rngs
            )
        self.shortcut = nnx.data(shortcut)
        self.norm = make_norm(config.norm, out_features)
        self.pool = pool

    def __call__(
        self, h: GroupFeatures, *, rngs: nnx.Rngs | None, batch_mask: jax.Array | None = None
    ) -> GroupFeatures:
        y = relu(layer_norm_nhw(self.conv1(h, rngs=rngs)))
        y = y.replace_values(self.dropout(y.values, rngs=rngs))
        y = relu(layer_norm_nhw(self.conv2(y, rngs=rngs)))
        skip = h if self.shortcut is None else self.shortcut(h, y.elements, y.mask)
        y = apply_norm(self.norm, y.replace_values(y.values + skip.values), batch_mask)
        if self.pool:
            y = spatial_max_pool(y)
        return relu(y)


class CKResNet(nnx.Module):
    """Residual (partial) G-CNN with continuous kernels (REFERENCE 4.1, Tables 1-4).

    ``__call__(x [B, H, W, C_in], *, rngs) -> logits [B, num_classes]``; ``rngs`` carries a
    ``sample`` stream (Monte Carlo elements) and a ``dropout`` stream. Heads: ``"pool"`` (max
    over ``(N, H, W)``), ``"t2"`` (mean over ``N``, then a T(2) final conv, see
    :mod:`pgcnn_jax.models._heads`) and ``"mlp"`` (learnable pooling over the final
    ``[N, h, w] = [N, *final_spatial_dim]`` map).
    """

    def __init__(self, config: ModelConfig, *, num_classes: int, in_features: int, rngs):
        widths, pools = init_stem(self, config, in_features, num_classes, rngs)
        self.blocks = nnx.List(
            [
                ResBlock(a, b, config, pool=i + 1 in pools, rngs=rngs)
                for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
            ]
        )
        width = widths[-1]
        if config.head == "t2":
            final = T2FinalConv(
                width,
                width,
                group=config.make_group(),
                kernel_size=config.kernel_size,
                **kernel_settings(config, joint=True),
                rngs=rngs,
            )
        else:
            final = GroupConv(
                width, width, **group_conv_settings(config, padding="valid"), rngs=rngs
            )
        self.final_conv = final
        self.final_norm = make_norm(config.norm, width)
        mlp = None
        if config.head == "mlp":
            n_final = config.num_elements
            mlp = MLPPooling(n_final, config.final_spatial_dim, rngs=rngs)
        self.mlp_pool = nnx.data(mlp)
        self.classifier = torch_linear(width, num_classes, rngs)

    def group_convs(self) -> list[tuple[str, GroupConv]]:
        """The group convs with (possibly) learnable distributions, in registration order:
        ``block1.conv1, block1.conv2, ..., final_conv`` (the T(2) final conv excluded)."""
        out = []
        for i, block in enumerate(self.blocks):
            out += [(f"block{i + 1}.conv1", block.conv1), (f"block{i + 1}.conv2", block.conv2)]
        if isinstance(self.final_conv, GroupConv):
            out.append(("final_conv", self.final_conv))
        return out

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        rngs: nnx.Rngs | None = None,
        batch_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Logits ``[B, num_classes]``. ``batch_mask`` (``[B]``, optional) excludes rows from
        normalisation statistics (used by the Augerino wrapper for its padding copies)."""
        h = forward_blocks(self, x, rngs=rngs, batch_mask=batch_mask, name="CKResNet")
        # the rendered size: larger than kernel_size for scaling groups
        k = rendered_kernel_size(
            self.final_conv.group, self.config.num_elements, self.config.kernel_size
        )
        if h.values.shape[1] < k or h.values.shape[2] < k:
            raise ValueError(
                f"the final valid {k}x{k} conv needs a map of at least {k}x{k}, got "
                f"{h.values.shape[1]}x{h.values.shape[2]} from input {x.shape[1]}x{x.shape[2]}"
            )
        if self.config.head == "t2":
            h = self.final_conv(h)
        else:
            h = self.final_conv(h, rngs=rngs)
        h = relu(apply_norm(self.final_norm, h, batch_mask))
        pooled = global_max_pool(h) if self.mlp_pool is None else self.mlp_pool(h)
        return self.classifier(pooled)
