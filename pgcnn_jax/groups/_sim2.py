"""Sim(2)'s stabiliser: rotations times scalings (the dilation-rotation group), elements
``[angle, log_scale]`` (``d = 2``).

The element ``(r, l)`` acts on ``(row, col)`` vectors by ``A(r, l) = e^l R(r)`` with ``R`` the
rotation matrix of :class:`~pgcnn_jax.groups.SE2`; the product adds angles (wrapped to
``[0, 2 pi)``) and log-scales. A layer with ``N`` slots holds ``R = N / S`` rotations at each of
the group's ``S`` scales ``b^j`` (``j = 0..S-1``), laid out scale-major: slot ``j R' + k`` is
rotation ``k`` at scale ``j`` for ``R'`` kept rotations and ``S'`` kept scales, so the first
``N' = R' S'`` slots are the valid ones (the full grid is ``R' = R``, ``S' = S``).

The scale axis is not compact: the group is truncated to the log-scales ``[0, L]``,
``L = (S - 1) log b``, and kernels are rendered on a grid large enough for the largest scale
(:meth:`Sim2.kernel_extent`; ``s^-2`` Haar factor, :meth:`Sim2.kernel_measure`). Full
sampling always takes the ``S`` grid scales (``sampling="random"`` offsets the rotations
only). A partial layer learns the rotations as :class:`SE2` does (``theta`` or ``keep``) and a
width ``scale`` ``w`` (initially 1: every scale) of the scale axis, which keeps
``S' = min(ceil(S |w|), S)`` scales (at least 1) at the reparameterised log-scales

.. math::

    l_j = j \\log b \\; S \\bar w / S' \\quad \\text{(deterministic)}, \\qquad
    l_j = (j + u)\\, L \\bar w / S',\\; u \\sim U[0, 1) \\quad \\text{(random)},

``j < S'``, with ``\\bar w = min(|w|, 1)`` forward and the gradient of ``|w|`` (straight
through, so a width pushed past 1 can come back). At ``w = 1`` the deterministic scales are the
grid ``j log b``, the random ones a stratified sample of ``[0, L)``; every log-scale stays in
``[0, L]``, inside the rendered kernel grid. The random offset gives ``w`` a gradient even at
``S' = 1``; deterministic layers get one only through their non-identity scales (``S' >= 2``).
"""

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
    DistributionSpec,
    Group,
    SubsetSummary,
    register_group,
    wrap_angle,
)
from pgcnn_jax.groups._sampling import (
    kept_rotations,
    partial_count,
    rotation_specs,
)
from pgcnn_jax.groups._se2 import (
    QUARTER_TURNS,
    angle_distance,
    draw_rotations,
    rotation_axis,
    rotation_matrix,
)


@dataclasses.dataclass(frozen=True)
class Sim2(Group):
    """Rotations and scalings ``b^j``, ``j = 0..S-1``; ``N`` slots = ``R`` rotations x ``S``
    scales (``get_group("sim2", num_scales=S, scale_base=b)``).

    Attributes:
      num_scales: ``S >= 1``, the number of scales.
      scale_base: ``b > 1``, the ratio of consecutive scales.
      haar_measure: multiply the kernel at scale ``s`` by the Haar factor ``s^-2`` (default);
        ``False`` leaves it out (an ablation: each scale's kernel then has the same weight per
        tap, so a larger scale's response grows with its area).
    """

    num_scales: int = 2
    scale_base: float = math.sqrt(2.0)
    haar_measure: bool = True

    name = "sim2"
    dim = 2
    label = "Sim(2)"
    signed_ceil = False

    def __post_init__(self):
        s, b = self.num_scales, self.scale_base
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1:
            raise ValueError(f"num_scales must be a positive int, got {s!r}")
        if (
            isinstance(b, bool)
            or not isinstance(b, int | float | np.integer | np.floating)
            or not math.isfinite(b)
            or b <= 1.0
        ):
            raise ValueError(f"scale_base must be a finite number > 1, got {b!r}")
        if not isinstance(self.haar_measure, bool | np.bool_):
            raise ValueError(f"haar_measure must be a bool, got {self.haar_measure!r}")
        object.__setattr__(self, "haar_measure", bool(self.haar_measure))
        # Normalised values: equal settings give equal (and equally hashed) groups.
        object.__setattr__(self, "num_scales", int(s))
        object.__setattr__(self, "scale_base", float(b))

    # ------------------------------------------------------------------ structure
    @property
    def log_range(self) -> float:
        """``L = (S - 1) log b``, the span of the group's log-scales."""
        return (self.num_scales - 1) * math.log(self.scale_base)

    def check_num_elements(self, num_elements: int) -> int:
        n = super().check_num_elements(num_elements)
        if n % self.num_scales:
            raise ValueError(
                f"group {self.name!r} with num_scales={self.num_scales} needs num_elements "
                f"divisible by {self.num_scales} (rotations x scales); got num_elements={n}"
            )
        return n

    def num_rotations(self, num_elements: int) -> int:
        return num_elements // self.num_scales

    # ------------------------------------------------------------------ algebra
    def identity(self, shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.zeros((*shape, 2), jnp.float32)

    def product(self, g1, g2) -> jax.Array:
        """``(r1 + r2 mod 2 pi, l1 + l2)``."""
        g1, g2 = jnp.broadcast_arrays(jnp.asarray(g1), jnp.asarray(g2))
        return jnp.stack([wrap_angle(g1[..., 0] + g2[..., 0]), g1[..., 1] + g2[..., 1]], -1)

    def inverse(self, g) -> jax.Array:
        """``(-r, -l)`` (the angle not wrapped; the next product wraps)."""
        return -jnp.asarray(g)

    def matrix(self, g) -> jax.Array:
        """``A(r, l) = e^l [[cos r, sin r], [-sin r, cos r]]`` on ``(row, col)`` vectors."""
        g = jnp.asarray(g)
        r, log_s = g[..., 0], g[..., 1]
        return jnp.exp(log_s)[..., None, None] * rotation_matrix(r, jnp.ones_like(r))

    def normalize(self, g) -> jax.Array:
        """angle -> ``angle / pi - 1`` in ``[-1, 1)``, log-scale -> ``l / L`` (relative
        log-scales of the group lie in ``[-L, L]``; ``0`` when ``S = 1``)."""
        g = jnp.asarray(g)
        span = self.log_range if self.num_scales > 1 else 1.0
        return jnp.stack([g[..., 0] / math.pi - 1.0, g[..., 1] / span], axis=-1)

    def kernel_measure(self, elements: jax.Array) -> jax.Array:
        """``|det A(u)|^{-1} = e^{-2 l}``, ``[S, N, d] -> [S, N]`` (ones without
        :attr:`haar_measure`)."""
        if not self.haar_measure:
            return jnp.ones(jnp.shape(elements)[:-1], jnp.float32)
        return jnp.exp(-2.0 * jnp.asarray(elements)[..., 1])

    def kernel_extent(self, num_elements: int) -> float:
        """``b^(S - 1)``, the largest scale any sample holds."""
        return self.scale_base ** (self.num_scales - 1)

    def distance(self, a, b) -> jax.Array:
        return angle_distance(a[..., 0], b[..., 0]) + jnp.abs(a[..., 1] - b[..., 1])

    def as_element(self, element) -> jax.Array:
        """``(angle, log_scale)``; a lone angle means ``(angle, 0)``."""
        e = jnp.asarray(element, jnp.float32).reshape(-1)
        if e.shape == (1,):
            e = jnp.concatenate([e, jnp.zeros((1,))])
        return super().as_element(e)

    def describe_element(self, element) -> str:
        r, log_s = np.asarray(element, np.float64).reshape(-1)[:2]
        return f"rotation {math.degrees(r):.1f} deg, scale {math.exp(log_s):.4g}"

    # ------------------------------------------------------------------ grids and sampling
    def grid(self, num_elements: int) -> jax.Array:
        """Slot ``j R + k``: rotation ``2 pi k / R`` at log-scale ``j log b``."""
        n = self.check_num_elements(num_elements)
        rot = self.num_rotations(n)
        k = jnp.arange(n) % rot
        j = jnp.arange(n) // rot
        angles = TWO_PI * k.astype(jnp.float32) / rot
        logs = j.astype(jnp.float32) * jnp.float32(math.log(self.scale_base))
        return jnp.stack([angles, logs], axis=-1)

    def moves(self, num_elements: int) -> bool:
        return self.num_rotations(num_elements) > 1

    def distribution(self, num_elements: int, sampling: str) -> Distribution:
        rotations = rotation_specs(self.num_rotations(num_elements), sampling)
        scales = (DistributionSpec("scale"),) if self.num_scales > 1 else ()
        return Distribution((*rotations, *scales))

    def _log_scales(self, key, num_samples, sampling, partial, params):
        """``(log-scales [S_samples, S], S' (int32))``."""
        num = self.num_scales
        j = jnp.arange(num, dtype=jnp.float32)[None, :]
        log_b = math.log(self.scale_base)
        if not partial or num == 1:
            logs = jnp.broadcast_to(j * jnp.float32(log_b), (num_samples, num))
            return logs, jnp.asarray(num, jnp.int32)
        width = params.get("scale")
        if width is None:
            raise ValueError(f"partial sampling of {self.name!r} needs the scale parameter")
        width = jnp.asarray(width, jnp.float32).reshape(())
        count = partial_count(num, width)
        a = jnp.abs(width)
        w = a + jax.lax.stop_gradient(jnp.minimum(a, 1.0) - a)  # min(|w|, 1), gradient of |w|
        n = count.astype(jnp.float32)
        if sampling == "random":
            u = jax.random.uniform(key, (num_samples, 1), jnp.float32)
            logs = (j + u) * (self.log_range * w / n)
        else:
            logs = jnp.broadcast_to(j * (log_b * num * w / n), (num_samples, num))
        return jnp.where(j < n, logs, 0.0), count

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
        # The rotations are drawn as SE2 draws them from the same key; the scale offsets use
        # the third key it returns (E2's mirror key).
        n, rot, angles, r_count, k_scale, params = draw_rotations(
            self, key, num_elements, num_samples, sampling, partial, params, temperature
        )
        logs, s_count = self._log_scales(k_scale, num_samples, sampling, partial, params)
        i = jnp.arange(n)
        valid = i < r_count * s_count
        k = jnp.clip(i % r_count, 0, rot - 1)
        j = jnp.clip(i // r_count, 0, self.num_scales - 1)
        r = jnp.where(valid[None, :], angles[:, k], 0.0)
        log_s = jnp.where(valid[None, :], logs[:, j], 0.0)
        mask = jnp.broadcast_to(valid[None, :], (num_samples, n)).astype(jnp.float32)
        return jnp.stack([r, log_s], axis=-1), mask

    def kept_scales(self, params: Mapping[str, np.ndarray]) -> int:
        """Host ``S' = min(ceil(S |w|), S)`` (at least 1) of the width ``params["scale"]``, all
        ``S`` scales without it."""
        width = params.get("scale")
        num = self.num_scales
        if width is None or num == 1:
            return num
        w = np.float32(np.asarray(width, np.float32).reshape(()))
        with np.errstate(invalid="ignore"):
            raw = np.ceil(np.float32(num) * np.abs(w))
        if not np.isfinite(raw):
            raise ValueError(f"scale width of a partial layer is not finite: {float(w)}")
        return int(np.clip(raw, 1, num))

    def summarize(self, num_elements, params=None) -> SubsetSummary:
        rot = self.num_rotations(num_elements)
        params = params or {}
        kept = kept_rotations(rot, params, signed_ceil=False)
        scales = self.kept_scales(params)
        width = params.get("scale")
        axes = {
            "rotation": rotation_axis(rot, kept, params, rotates=True),
            "scale": {
                "kept": scales,
                "of": self.num_scales,
                "width": 1.0 if width is None else float(np.asarray(width).reshape(())),
            },
        }
        return SubsetSummary(num_elements=kept * scales, axes=axes)

    def adaptive_count(self, num_elements, params) -> int | None:
        """``R' S'`` when both counts are functions of the parameters (``theta`` or a single
        rotation; the scale width or a single scale), else ``None`` (``keep`` sampling)."""
        rot = self.num_rotations(num_elements)
        if params.get("theta") is None and rot > 1:
            return None
        if params.get("scale") is None and self.num_scales > 1:
            return None
        return kept_rotations(rot, params, signed_ceil=False) * self.kept_scales(params)

    # ------------------------------------------------------------------ action on images
    def exact_elements(self) -> list[tuple[float, ...]]:
        """The quarter turns at scale 1 (a rotation permutes the group axis within each
        scale; scalings resample the pixel grid)."""
        return [(a, 0.0) for a in QUARTER_TURNS]


register_group("sim2", Sim2)
