"""Group values: SE(2), E(2), T(2) and the mirror group, as frozen hashable dataclasses.

Elements of the stabiliser are arrays with a trailing axis ``d``:

* ``d = 1`` (SE2, T2): ``[angle]`` in radians, kept in ``[0, 2*pi)`` after products.
* ``d = 2`` (E2, mirror): ``[angle, mirror]`` with ``mirror`` in ``{+1, -1}`` (-1 = mirrored).

Conventions follow REFERENCE 1.2-1.5 exactly: the matrix of ``(r, m)`` acts on the
``(row, col)`` coordinate vector as ``A(r, m) = diag(1, m) @ [[cos r, sin r], [-sin r, cos r]]``
and the E2 product is ``(r1, m1) (r2, m2) = ((r2 + m2 r1) mod 2 pi, m1 m2)``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

TWO_PI = 2.0 * math.pi

# Wrapped angles closer than this to 0 or 2 pi are the identity rotation up to float32
# rounding: 8 ulps of 2 pi in float32 (3.8e-6 rad).
ANGLE_SNAP = 8 * float(np.spacing(np.float32(TWO_PI)))

GROUP_NAMES = ("se2", "e2", "t2", "mirror")


@dataclasses.dataclass(frozen=True)
class Group:
    """A planar stabiliser group (the rotation / reflection part of a roto-translation group).

    Attributes:
      name: ``"se2"``, ``"e2"``, ``"t2"`` or ``"mirror"``.
      dim: size ``d`` of the trailing element axis (1 for se2/t2, 2 for e2/mirror).
      has_rotations: whether angles other than 0 occur.
      has_mirror: whether reflections occur.
    """

    name: str
    dim: int
    has_rotations: bool
    has_mirror: bool

    # ------------------------------------------------------------------ structure
    def check_num_elements(self, num_elements: int) -> int:
        """Validates a number of sampled elements for this group and returns it."""
        if isinstance(num_elements, bool) or not isinstance(num_elements, int):
            raise ValueError(f"num_elements must be an int, got {num_elements!r}")
        if num_elements < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements}")
        if self.name == "t2" and num_elements != 1:
            raise ValueError(f"group 't2' has exactly one element; got num_elements={num_elements}")
        if self.name == "mirror" and num_elements != 2:
            raise ValueError(
                f"group 'mirror' has exactly two elements; got num_elements={num_elements}"
            )
        if self.name == "e2" and num_elements % 2:
            raise ValueError(
                "group 'e2' needs an even num_elements (rotations x 2 mirrors); "
                f"got num_elements={num_elements}"
            )
        return num_elements

    def num_rotations(self, num_elements: int) -> int:
        """Number of distinct rotation slots ``R`` among ``num_elements`` slots."""
        return num_elements // 2 if self.has_mirror else num_elements

    # ------------------------------------------------------------------ algebra
    def identity(self, shape: tuple[int, ...] = ()) -> jax.Array:
        """The identity element(s), shape ``[*shape, d]``."""
        e = jnp.zeros((*shape, self.dim), jnp.float32)
        if self.has_mirror:
            e = e.at[..., 1].set(1.0)
        return e

    def product(self, g1: jax.typing.ArrayLike, g2: jax.typing.ArrayLike) -> jax.Array:
        """Group product ``g1 * g2`` (broadcasting over leading axes); angle wrapped by
        :func:`wrap_angle`."""
        g1, g2 = jnp.broadcast_arrays(jnp.asarray(g1), jnp.asarray(g2))
        if not self.has_mirror:
            return wrap_angle(g1 + g2)
        r1, m1 = g1[..., 0], g1[..., 1]
        r2, m2 = g2[..., 0], g2[..., 1]
        return jnp.stack([wrap_angle(r2 + m2 * r1), m1 * m2], axis=-1)

    def inverse(self, g: jax.typing.ArrayLike) -> jax.Array:
        """Group inverse (not wrapped, like the reference; the next product wraps)."""
        g = jnp.asarray(g)
        if not self.has_mirror:
            return -g
        r, m = g[..., 0], g[..., 1]
        return jnp.stack([-m * r, m], axis=-1)

    def matrix(self, g: jax.typing.ArrayLike) -> jax.Array:
        """Matrix ``A(g)`` acting on ``(row, col)`` vectors, shape ``[..., 2, 2]``.

        .. math:: A(r, m) = \\mathrm{diag}(1, m) \\begin{pmatrix}\\cos r & \\sin r \\\\
                  -\\sin r & \\cos r\\end{pmatrix}
        """
        g = jnp.asarray(g)
        r = g[..., 0]
        m = g[..., 1] if self.has_mirror else jnp.ones_like(r)
        c, s = jnp.cos(r), jnp.sin(r)
        return jnp.stack([jnp.stack([c, s], -1), jnp.stack([-m * s, m * c], -1)], -2)

    def inverse_matrix(self, g: jax.typing.ArrayLike) -> jax.Array:
        """``A(g)^{-1}``, computed as the matrix of the inverse element ``A(g^{-1})``, shape
        ``[..., 2, 2]`` (REFERENCE 1.3).

        For mirror groups this is ``A(-m r, m) = [[cos(m r), -sin(m r)], [m sin(m r),
        m cos(m r)]]``. At ``m = +-1`` it equals the explicit inverse ``[[cos r, -m sin r],
        [sin r, m cos r]]``, but under partial sampling ``m`` is the relaxed straight-through
        mirror sample, and its gradient must be the one of ``A(g^{-1})``, as in the release.
        """
        return self.matrix(self.inverse(g))

    def relative(self, g_out: jax.typing.ArrayLike, g_in: jax.typing.ArrayLike) -> jax.Array:
        """Outer relative elements ``u_i^{-1} v_j``, wrapped: ``[S, N_out, d], [S, N_in, d]``
        -> ``[S, N_out, N_in, d]`` (leading ``S`` broadcasts).

        The angle is ``(r_in - m_in m_out r_out) mod 2 pi``, computed directly so that identical
        elements give exactly 0 (REFERENCE 1.5, 9.2); pairs whose rotation is 0 up to float32
        rounding (grid points, e.g. mirrored ``pi`` and ``pi``) give exactly 0 too
        (:func:`wrap_angle`).
        """
        u = jnp.asarray(g_out)[..., :, None, :]
        v = jnp.asarray(g_in)[..., None, :, :]
        return self.product(self.inverse(u), v)

    def normalize(self, g: jax.typing.ArrayLike) -> jax.Array:
        """Kernel-net encoding of (relative) elements: angle -> ``angle / pi - 1`` in
        ``[-1, 1)`` (identity -> -1); the mirror sign passes unchanged."""
        g = jnp.asarray(g)
        angle = g[..., :1] / math.pi - 1.0
        if not self.has_mirror:
            return angle
        return jnp.concatenate([angle, g[..., 1:]], axis=-1)

    # ------------------------------------------------------------------ grids
    def grid(self, num_elements: int) -> jax.Array:
        """The deterministic grid, shape ``[N, d]`` (REFERENCE 1.6 a, e).

        SE2: ``2 pi k / N``. E2: the ``R = N // 2`` rotations ``2 pi k / R`` unmirrored, followed
        by the same rotations mirrored. T2: the identity. Mirror: ``(0, +1), (0, -1)``.
        """
        num_elements = self.check_num_elements(num_elements)
        rot = self.num_rotations(num_elements)
        angles = TWO_PI * jnp.arange(rot, dtype=jnp.float32) / rot
        if not self.has_rotations:
            angles = jnp.zeros_like(angles)
        if not self.has_mirror:
            return angles[:, None]
        return mirror_layout(angles, jnp.ones((rot,), jnp.float32))


def wrap_angle(angle: jax.typing.ArrayLike) -> jax.Array:
    """``angle mod 2 pi`` in ``[0, 2 pi)``, with values within :data:`ANGLE_SNAP` of 0 or
    ``2 pi`` set to exactly 0.

    Products of grid elements whose rotation is exactly 0 (e.g. ``pi + pi`` of an E2 grid
    with ``R = 10``) come out of float32 rounding as ``2 pi - eps`` or ``+eps``; unsnapped,
    ``2 pi - eps`` reaches the kernel net at the far end of its normalised input (+1 instead
    of -1) and breaks exact equivariance. The snap changes the forward value only; the
    gradient is the identity's (straight-through), so the relaxed samples keep theirs.
    """
    w = jnp.mod(jnp.asarray(angle), TWO_PI)
    near = (w < ANGLE_SNAP) | (w > TWO_PI - ANGLE_SNAP)
    return w + jax.lax.stop_gradient(jnp.where(near, jnp.zeros_like(w), w) - w)


def mirror_layout(angles: jax.Array, mirror_sign: jax.Array) -> jax.Array:
    """``[..., R]`` angles -> ``[..., 2R, 2]``: unmirrored block then the mirrored block.

    ``mirror_sign`` (``[..., R]`` or broadcastable) is the value ``s`` put in the mirrored block
    as ``-s`` (1 forward; straight-through samples carry gradients there).
    """
    mirror_sign = jnp.broadcast_to(mirror_sign, angles.shape)
    plus = jnp.stack([angles, jnp.ones_like(angles)], axis=-1)
    minus = jnp.stack([angles, -mirror_sign], axis=-1)
    return jnp.concatenate([plus, minus], axis=-2)


_GROUPS = {
    "se2": Group("se2", dim=1, has_rotations=True, has_mirror=False),
    "e2": Group("e2", dim=2, has_rotations=True, has_mirror=True),
    "t2": Group("t2", dim=1, has_rotations=False, has_mirror=False),
    "mirror": Group("mirror", dim=2, has_rotations=False, has_mirror=True),
}


def get_group(name: str) -> Group:
    """Returns the group called ``name``: ``"se2"``, ``"e2"``, ``"t2"`` or ``"mirror"``.

    >>> get_group("e2").dim
    2
    """
    if isinstance(name, Group):
        return name
    key = str(name).lower()
    if key not in _GROUPS:
        raise ValueError(f"unknown group {name!r}; expected one of {GROUP_NAMES}")
    return _GROUPS[key]
