"""SE(2)'s stabiliser: planar rotations, elements ``[angle]`` in radians (``d = 1``), kept in
``[0, 2 pi)`` after products (REFERENCE 1.2-1.6)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pgcnn_jax.groups._base import (
    TWO_PI,
    Distribution,
    Group,
    SubsetSummary,
    host_sigmoid,
    register_group,
    wrap_angle,
)
from pgcnn_jax.groups._sampling import (
    kept_rotations,
    rotation_specs,
    sample_rotations,
)


def rotation_matrix(r: jax.Array, m: jax.Array) -> jax.Array:
    """``diag(1, m) @ [[cos r, sin r], [-sin r, cos r]]``, ``[...] -> [..., 2, 2]``."""
    c, s = jnp.cos(r), jnp.sin(r)
    return jnp.stack([jnp.stack([c, s], -1), jnp.stack([-m * s, m * c], -1)], -2)


def angle_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.abs(jnp.angle(jnp.exp(1j * (a - b))))


def rotation_axis(rot: int, kept: int, params: Mapping[str, np.ndarray], *, rotates: bool) -> dict:
    """The rotation axis of a :class:`SubsetSummary`: ``kept`` of ``rot`` rotations, the
    learned width ``theta`` (1 without one, ``None`` with per-rotation ``keep`` decisions or
    without rotations), the kept interval in degrees and the keep probabilities."""
    theta, keep = params.get("theta"), params.get("keep")
    keep_probs = None  # lists, not tuples: the axes are written to JSON and read back
    if keep is not None:
        keep_probs = [float(p) for p in host_sigmoid(2.0 * np.asarray(keep))]
    width = None
    if rotates and keep is None:
        width = 1.0 if theta is None else float(np.asarray(theta).reshape(()))
    interval = None if width is None else [-180.0 * abs(width), 180.0 * abs(width)]
    return {
        "kept": kept,
        "of": rot,
        "width": width,
        "interval_deg": interval,
        "keep_probs": keep_probs,
    }


def draw_rotations(
    group: Group, key, num_elements, num_samples, sampling, partial, params, temperature
):
    """The start every rotation group's :meth:`~Group.sample` shares: the checks
    (:meth:`Group.sample_args`) and the rotation part of the sample
    (:func:`sample_rotations`, with the group's ``signed_ceil``). Returns ``(N, R, angles
    [S, R], R' (int32), third key, params)``."""
    n, key = group.sample_args(key, num_elements, sampling, num_samples, partial)
    params = params or {}
    rot = group.num_rotations(n)
    angles, count, k_extra = sample_rotations(
        key,
        rot,
        num_samples=num_samples,
        sampling=sampling,
        partial=partial,
        params=params,
        temperature=temperature,
        signed_ceil=group.signed_ceil,
    )
    return n, rot, angles, count, k_extra, params


QUARTER_TURNS = (math.pi / 2, math.pi, 3 * math.pi / 2)


@dataclasses.dataclass(frozen=True)
class SE2(Group):
    """Rotations by any angle, sampled on ``N`` slots; partial layers learn ``theta`` (random
    sampling: the uniform on ``[-pi theta, pi theta)``) or ``keep`` (deterministic sampling:
    one Bernoulli per non-identity grid rotation)."""

    name = "se2"
    dim = 1
    label = "SE(2)"
    #: whether the group has rotations other than the identity (False for T(2))
    rotates = True
    #: the reference's signed count of kept rotations (E2, REFERENCE 1.6 g)
    signed_ceil = False

    def identity(self, shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.zeros((*shape, 1), jnp.float32)

    def product(self, g1, g2) -> jax.Array:
        """``g1 g2``: angles added, wrapped by :func:`wrap_angle`."""
        g1, g2 = jnp.broadcast_arrays(jnp.asarray(g1), jnp.asarray(g2))
        return wrap_angle(g1 + g2)

    def inverse(self, g) -> jax.Array:
        """``-angle`` (not wrapped, like the reference; the next product wraps)."""
        return -jnp.asarray(g)

    def matrix(self, g) -> jax.Array:
        """``A(r) = [[cos r, sin r], [-sin r, cos r]]`` on ``(row, col)`` vectors."""
        r = jnp.asarray(g)[..., 0]
        return rotation_matrix(r, jnp.ones_like(r))

    def relative(self, g_out, g_in) -> jax.Array:
        """``u_i^{-1} v_j``: the angle ``(r_in - r_out) mod 2 pi``, exactly 0 for identical
        elements (REFERENCE 1.5, 9.2)."""
        return super().relative(g_out, g_in)

    def normalize(self, g) -> jax.Array:
        """angle -> ``angle / pi - 1`` in ``[-1, 1)`` (identity -> -1)."""
        return jnp.asarray(g)[..., :1] / math.pi - 1.0

    def distance(self, a, b) -> jax.Array:
        return angle_distance(a[..., 0], b[..., 0])

    def grid(self, num_elements: int) -> jax.Array:
        """``2 pi k / N`` (REFERENCE 1.6 a)."""
        n = self.check_num_elements(num_elements)
        return (TWO_PI * jnp.arange(n, dtype=jnp.float32) / n)[:, None]

    def moves(self, num_elements: int) -> bool:
        return self.num_rotations(num_elements) > 1

    def distribution(self, num_elements: int, sampling: str) -> Distribution:
        return Distribution(rotation_specs(self.num_rotations(num_elements), sampling))

    def sample(
        self,
        key,
        num_elements,
        *,
        num_samples=1,
        sampling="random",
        partial=False,
        params=None,
        temperature=0.5,
    ):
        n, _, angles, count, _, _ = draw_rotations(
            self, key, num_elements, num_samples, sampling, partial, params, temperature
        )
        mask = jnp.broadcast_to((jnp.arange(n) < count)[None, :], (num_samples, n))
        return angles[..., None], mask.astype(jnp.float32)

    def summarize(self, num_elements, params=None) -> SubsetSummary:
        rot = self.num_rotations(num_elements)
        params = params or {}
        kept = kept_rotations(rot, params, signed_ceil=self.signed_ceil)
        axis = rotation_axis(rot, kept, params, rotates=self.rotates)
        return SubsetSummary(num_elements=kept, axes={"rotation": axis})

    def adaptive_count(self, num_elements, params) -> int | None:
        if params.get("theta") is None:
            return None
        return kept_rotations(self.num_rotations(num_elements), params, signed_ceil=False)

    def exact_elements(self) -> list[tuple[float, ...]]:
        return [(a,) for a in QUARTER_TURNS]

    def describe_element(self, element) -> str:
        return f"rotation {math.degrees(float(np.asarray(element).reshape(-1)[0])):.1f} deg"


register_group("se2", SE2)
