"""E(2)'s stabiliser O(2): rotations and reflections, elements ``[angle, mirror]`` (``d = 2``)
with ``mirror`` in ``{+1, -1}`` (-1 = mirrored).

Conventions follow REFERENCE 1.2-1.5 exactly: the matrix of ``(r, m)`` acts on the
``(row, col)`` coordinate vector as ``A(r, m) = diag(1, m) @ [[cos r, sin r], [-sin r, cos r]]``
and the product is ``(r1, m1) (r2, m2) = ((r2 + m2 r1) mod 2 pi, m1 m2)``. ``N`` slots hold
``R = N / 2`` rotations, laid out as the ``R'`` kept rotations unmirrored followed, if the
mirror fires, by the same rotations mirrored.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from pgcnn_jax.groups._base import (
    TWO_PI,
    Distribution,
    DistributionSpec,
    Group,
    SubsetSummary,
    host_sigmoid,
    register_group,
    wrap_angle,
)
from pgcnn_jax.groups._sampling import (
    _with_mirror,
    kept_rotations,
    relaxed_bernoulli_st,
    rotation_specs,
)
from pgcnn_jax.groups._se2 import (
    QUARTER_TURNS,
    angle_distance,
    draw_rotations,
    rotation_axis,
    rotation_matrix,
)


def mirror_layout(angles: jax.Array, mirror_sign: jax.Array) -> jax.Array:
    """``[..., R]`` angles -> ``[..., 2R, 2]``: unmirrored block then the mirrored block.

    ``mirror_sign`` (``[..., R]`` or broadcastable) is the value ``s`` put in the mirrored block
    as ``-s`` (1 forward; straight-through samples carry gradients there).
    """
    mirror_sign = jnp.broadcast_to(mirror_sign, angles.shape)
    plus = jnp.stack([angles, jnp.ones_like(angles)], axis=-1)
    minus = jnp.stack([angles, -mirror_sign], axis=-1)
    return jnp.concatenate([plus, minus], axis=-2)


@dataclasses.dataclass(frozen=True)
class E2(Group):
    """Rotations and reflections; partial layers learn the rotations as :class:`SE2` does (with
    the reference's signed count, REFERENCE 1.6 g) and ``mirror``, a straight-through
    Bernoulli with probability ``sigmoid(2 mirror)`` of including the mirrored copies."""

    name = "e2"
    dim = 2
    label = "E(2)"
    rotates = True
    signed_ceil = True

    def check_num_elements(self, num_elements: int) -> int:
        n = super().check_num_elements(num_elements)
        if n % 2:
            raise ValueError(
                f"group {self.name!r} needs an even num_elements (rotations x 2 mirrors); "
                f"got num_elements={n}"
            )
        return n

    def num_rotations(self, num_elements: int) -> int:
        return num_elements // 2

    def identity(self, shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.zeros((*shape, 2), jnp.float32).at[..., 1].set(1.0)

    def product(self, g1, g2) -> jax.Array:
        g1, g2 = jnp.broadcast_arrays(jnp.asarray(g1), jnp.asarray(g2))
        r1, m1 = g1[..., 0], g1[..., 1]
        r2, m2 = g2[..., 0], g2[..., 1]
        return jnp.stack([wrap_angle(r2 + m2 * r1), m1 * m2], axis=-1)

    def inverse(self, g) -> jax.Array:
        """``(-m r, m)`` (not wrapped, like the reference; the next product wraps)."""
        g = jnp.asarray(g)
        r, m = g[..., 0], g[..., 1]
        return jnp.stack([-m * r, m], axis=-1)

    def matrix(self, g) -> jax.Array:
        """``A(r, m) = diag(1, m) [[cos r, sin r], [-sin r, cos r]]``."""
        g = jnp.asarray(g)
        return rotation_matrix(g[..., 0], g[..., 1])

    def inverse_matrix(self, g) -> jax.Array:
        """``A(g^{-1}) = A(-m r, m) = [[cos(m r), -sin(m r)], [m sin(m r), m cos(m r)]]``. At
        ``m = +-1`` it equals the explicit inverse ``[[cos r, -m sin r], [sin r, m cos r]]``,
        but under partial sampling ``m`` is the relaxed straight-through mirror sample, and
        its gradient must be the one of ``A(g^{-1})``, as in the release."""
        return super().inverse_matrix(g)

    def relative(self, g_out, g_in) -> jax.Array:
        """``u_i^{-1} v_j``: the angle ``(r_in - m_in m_out r_out) mod 2 pi``, exactly 0 for
        identical elements and for pairs whose rotation is 0 up to float32 rounding (grid
        points, e.g. mirrored ``pi`` and ``pi``; :func:`wrap_angle`)."""
        return super().relative(g_out, g_in)

    def normalize(self, g) -> jax.Array:
        """angle -> ``angle / pi - 1`` in ``[-1, 1)``; the mirror sign passes unchanged."""
        g = jnp.asarray(g)
        return jnp.concatenate([g[..., :1] / math.pi - 1.0, g[..., 1:]], axis=-1)

    def distance(self, a, b) -> jax.Array:
        return angle_distance(a[..., 0], b[..., 0]) + jnp.abs(a[..., 1] - b[..., 1])

    def as_element(self, element) -> jax.Array:
        """``(angle, mirror)``; a lone angle means ``(angle, +1)``."""
        e = jnp.asarray(element, jnp.float32).reshape(-1)
        if e.shape == (1,):
            e = jnp.concatenate([e, jnp.ones((1,))])
        return super().as_element(e)

    def describe_element(self, element) -> str:
        r, m = np.asarray(element, np.float64).reshape(-1)[:2]
        return f"rotation {math.degrees(r):.1f} deg, mirror {m:+.0f}"

    def grid(self, num_elements: int) -> jax.Array:
        """The ``R = N // 2`` rotations ``2 pi k / R`` unmirrored, followed by the same
        rotations mirrored (REFERENCE 1.6 e)."""
        rot = self.num_rotations(self.check_num_elements(num_elements))
        angles = TWO_PI * jnp.arange(rot, dtype=jnp.float32) / rot
        return mirror_layout(angles, jnp.ones((rot,), jnp.float32))

    def moves(self, num_elements: int) -> bool:
        return self.num_rotations(num_elements) > 1

    def distribution(self, num_elements: int, sampling: str) -> Distribution:
        rotations = rotation_specs(self.num_rotations(num_elements), sampling)
        return Distribution((*rotations, DistributionSpec("mirror", relaxed=True)))

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
        n, rot, angles, count, k_mirror, params = draw_rotations(
            self, key, num_elements, num_samples, sampling, partial, params, temperature
        )
        if partial:
            mirror = params.get("mirror")
            if mirror is None:
                raise ValueError(f"partial sampling of {self.name!r} needs the mirror parameter")
            mirror = jnp.asarray(mirror, jnp.float32).reshape(())
            m_s, m_hard = relaxed_bernoulli_st(k_mirror, 2.0 * mirror, temperature)
        else:
            m_s = m_hard = jnp.ones((), jnp.float32)
        elements, valid = _with_mirror(angles, count, m_s, m_hard)
        mask = jnp.broadcast_to(valid[None, :], (num_samples, 2 * rot)).astype(jnp.float32)
        return elements, mask

    def summarize(self, num_elements, params=None) -> SubsetSummary:
        rot = self.num_rotations(num_elements)
        params = params or {}
        kept = kept_rotations(rot, params, signed_ceil=True)
        mirror = params.get("mirror")
        prob = 1.0 if mirror is None else float(host_sigmoid(2.0 * float(np.asarray(mirror))))
        mirrored = mirror is None or prob >= 0.5
        axes = {
            "rotation": rotation_axis(rot, kept, params, rotates=self.rotates),
            "mirror": {"kept": 2 if mirrored else 1, "of": 2, "width": prob},
        }
        return SubsetSummary(num_elements=2 * kept if mirrored else kept, axes=axes)

    def adaptive_count(self, num_elements, params) -> int | None:
        """``2 R'``: the mirrored copies stay (masked) in the slots when the mirror does not
        fire, so the count depends on ``theta`` only."""
        if params.get("theta") is None:
            return None
        return 2 * kept_rotations(self.num_rotations(num_elements), params, signed_ceil=True)

    def detach_discrete(self, elements: jax.Array) -> jax.Array:
        return elements.at[..., 1].set(jax.lax.stop_gradient(elements[..., 1]))

    def exact_elements(self) -> list[tuple[float, ...]]:
        angles = list(QUARTER_TURNS) if self.rotates else []
        return [(a, 1.0) for a in angles] + [(a, -1.0) for a in [0.0, *angles]]


register_group("e2", E2)
