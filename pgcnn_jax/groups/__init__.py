"""Planar stabiliser groups as types behind one protocol (:class:`Group`), their Monte Carlo
sampling and their action on images.

Registered groups: ``se2`` (rotations), ``e2`` (rotations and reflections), ``t2`` (the
trivial group), ``mirror`` (the reflection of the columns) and ``sim2`` (rotations and
scalings, ``get_group("sim2", num_scales=S, scale_base=b)``). A new group is one file with a
:class:`Group` subclass and a :func:`register_group` call, imported below.

Pure ``jax.numpy``; no Flax.
"""

from pgcnn_jax.groups import _e2, _mirror, _se2, _sim2, _t2  # noqa: F401  (registers the groups)
from pgcnn_jax.groups._action import resample
from pgcnn_jax.groups._base import (
    ANGLE_SNAP,
    SAMPLING_METHODS,
    TWO_PI,
    Distribution,
    DistributionSpec,
    Group,
    ImpliedSettings,
    SubsetSummary,
    get_group,
    register_group,
    registered_names,
    wrap_angle,
)
from pgcnn_jax.groups._e2 import E2, mirror_layout
from pgcnn_jax.groups._mirror import Mirror
from pgcnn_jax.groups._sampling import (
    gumbel_temperature,
    partial_count,
    relaxed_bernoulli_st,
    sample_elements,
    subset_size,
)
from pgcnn_jax.groups._se2 import SE2
from pgcnn_jax.groups._sim2 import Sim2
from pgcnn_jax.groups._t2 import T2

_PAPER_ORDER = ("se2", "e2", "t2", "mirror")
#: names of the registered groups (:func:`get_group`): the paper's four, then any others in
#: registration order
GROUP_NAMES = _PAPER_ORDER + tuple(n for n in registered_names() if n not in _PAPER_ORDER)

__all__ = [
    "ANGLE_SNAP",
    "E2",
    "GROUP_NAMES",
    "SAMPLING_METHODS",
    "SE2",
    "Sim2",
    "T2",
    "TWO_PI",
    "Distribution",
    "DistributionSpec",
    "Group",
    "ImpliedSettings",
    "Mirror",
    "SubsetSummary",
    "get_group",
    "gumbel_temperature",
    "mirror_layout",
    "partial_count",
    "register_group",
    "registered_names",
    "relaxed_bernoulli_st",
    "resample",
    "sample_elements",
    "subset_size",
    "wrap_angle",
]
