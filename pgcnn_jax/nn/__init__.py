"""Flax NNX layers of partial group equivariant CNNs."""

from pgcnn_jax.nn._adaptive import (
    active_elements,
    adaptive_sizes,
    set_active_elements,
    update_adaptive,
)
from pgcnn_jax.nn._conv import GroupConv, LiftingConv, PointwiseGroupConv
from pgcnn_jax.nn._conv_base import PADDINGS, safe_norm
from pgcnn_jax.nn._features import GroupFeatures, broadcast_mask
from pgcnn_jax.nn._functional import (
    CONV_PRECISIONS,
    check_precision,
    conv2d,
    conv2d_per_example,
    group_kernel,
    lifting_kernel,
    per_example_chunk,
    rendered_kernel_size,
)
from pgcnn_jax.nn._norm import GroupBatchNorm, GroupLayerNorm, layer_norm_nhw
from pgcnn_jax.nn._partial import (
    PartialGroupLayer,
    distribution_values,
    layer_name,
    partial_layers,
    set_distribution,
)
from pgcnn_jax.nn._pool import group_max_pool, group_mean_pool, spatial_max_pool
from pgcnn_jax.nn._render import (
    DEPTHWISE_METHODS,
    GROUP_RENDERERS,
    depthwise_conv2d,
    depthwise_method,
    disc_taps,
    joint_group_conv,
    render_group_conv,
    separable_group_conv,
    separable_kernels,
)
from pgcnn_jax.nn._sampling import (
    PER_EXAMPLE_RENDERS,
    SAMPLING_KEYWORDS,
    SamplingSpec,
    as_sampling_spec,
)
from pgcnn_jax.nn._variables import (
    DistributionParam,
    GumbelHorizon,
    GumbelStep,
    KernelNorm,
    advance_gumbel_steps,
    set_gumbel_horizon,
)

__all__ = [
    "CONV_PRECISIONS",
    "DEPTHWISE_METHODS",
    "GROUP_RENDERERS",
    "PADDINGS",
    "PER_EXAMPLE_RENDERS",
    "DistributionParam",
    "GroupBatchNorm",
    "GroupConv",
    "GroupFeatures",
    "GroupLayerNorm",
    "GumbelHorizon",
    "GumbelStep",
    "KernelNorm",
    "LiftingConv",
    "PartialGroupLayer",
    "PointwiseGroupConv",
    "SAMPLING_KEYWORDS",
    "SamplingSpec",
    "active_elements",
    "adaptive_sizes",
    "advance_gumbel_steps",
    "as_sampling_spec",
    "broadcast_mask",
    "check_precision",
    "conv2d",
    "conv2d_per_example",
    "depthwise_conv2d",
    "depthwise_method",
    "disc_taps",
    "distribution_values",
    "group_kernel",
    "group_max_pool",
    "group_mean_pool",
    "joint_group_conv",
    "layer_name",
    "layer_norm_nhw",
    "lifting_kernel",
    "partial_layers",
    "per_example_chunk",
    "render_group_conv",
    "rendered_kernel_size",
    "safe_norm",
    "separable_group_conv",
    "separable_kernels",
    "set_active_elements",
    "set_distribution",
    "set_gumbel_horizon",
    "spatial_max_pool",
    "update_adaptive",
]
