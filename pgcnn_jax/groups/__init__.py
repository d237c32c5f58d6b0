"""Planar stabiliser groups (SE2, E2, T2, mirror) and Monte Carlo sampling of their elements.

Pure ``jax.numpy``; no Flax.
"""

from pgcnn_jax.groups._group import (
    ANGLE_SNAP,
    GROUP_NAMES,
    TWO_PI,
    Group,
    get_group,
    mirror_layout,
    wrap_angle,
)
from pgcnn_jax.groups._sampling import (
    SAMPLING_METHODS,
    gumbel_temperature,
    partial_count,
    relaxed_bernoulli_st,
    sample_elements,
    subset_size,
)

__all__ = [
    "ANGLE_SNAP",
    "GROUP_NAMES",
    "SAMPLING_METHODS",
    "TWO_PI",
    "Group",
    "get_group",
    "gumbel_temperature",
    "mirror_layout",
    "partial_count",
    "relaxed_bernoulli_st",
    "sample_elements",
    "subset_size",
    "wrap_angle",
]
