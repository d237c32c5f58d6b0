"""Monte Carlo sampling of group elements (REFERENCE 1.6-1.7), in the masked execution: the
building blocks the groups' :meth:`~pgcnn_jax.groups.Group.sample` methods share, and the
group-generic entry points :func:`sample_elements` / :func:`subset_size`.

Every sampler returns ``(elements, mask)`` with static shapes ``[S, N, d]`` and ``[S, N]``:
``N`` slots, of which the first ``N'`` are valid (``mask == 1``); invalid slots hold the
identity and must be ignored by every reduction (DESIGN 4). For E2 the valid slots are laid out
as ``R'`` unmirrored rotations followed, if the mirror fires, by the same ``R'`` rotations
mirrored; with ``R' = R`` and the mirror on this is the full grid layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pgcnn_jax.groups._base import (
    TWO_PI,
    DistributionSpec,
    Group,
    get_group,
    host_sigmoid,
)


def gumbel_temperature(
    step: jax.typing.ArrayLike,
    horizon: jax.typing.ArrayLike,
    init: float = 0.5,
    end: float = 1e-4,
) -> jax.Array:
    """Linear relaxed-Bernoulli temperature ``tau(t) = tau0 - (t / T)(tau0 - tau1)``.

    ``step`` and ``horizon`` may be traced. Unlike the reference (REFERENCE 1.7) the value is
    clamped at ``end`` past the horizon, so it never turns negative.
    """
    if isinstance(horizon, int | float) and horizon < 1:
        raise ValueError(f"gumbel horizon must be >= 1, got {horizon}")
    t = jnp.asarray(step, jnp.float32)
    return jnp.maximum(init - (t / jnp.asarray(horizon, jnp.float32)) * (init - end), end)


def relaxed_bernoulli_st(
    key: jax.Array, logits: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Straight-through relaxed Bernoulli (binary Concrete / Gumbel-sigmoid).

    .. math:: y = \\sigma((\\ell + \\log U - \\log(1 - U)) / \\tau),\\quad
              s = [y > 0.5] + y - \\mathrm{sg}(y)

    Returns ``(s, hard)``: ``s`` is exactly 0/1 forward with the relaxed gradient, ``hard`` the
    same values without gradient. ``P(hard = 1) = sigmoid(logits)`` whatever ``tau > 0``.
    """
    logits = jnp.asarray(logits, jnp.float32)
    u = jax.random.uniform(key, logits.shape, jnp.float32, minval=1e-12, maxval=1.0)
    y = jax.nn.sigmoid((logits + jnp.log(u) - jnp.log1p(-u)) / temperature)
    hard = jax.lax.stop_gradient((y > 0.5).astype(jnp.float32))
    return hard + (y - jax.lax.stop_gradient(y)), hard


def partial_count(num: int, theta: jax.typing.ArrayLike, *, signed_ceil: bool = False) -> jax.Array:
    """``N' = min(ceil(N |theta|), N)``, at least 1 (int32, traced).

    With ``signed_ceil`` (the reference's E2 count) it is ``|ceil(N theta)|`` clipped to
    ``[1, N]``, i.e. ``floor(N |theta|)`` for negative ``theta`` (REFERENCE 1.6 g).
    """
    theta = jnp.asarray(theta, jnp.float32)
    raw = jnp.abs(jnp.ceil(num * theta)) if signed_ceil else jnp.ceil(num * jnp.abs(theta))
    return jnp.clip(raw, 1, num).astype(jnp.int32)


def _stratified_interval(theta: jax.Array, u: jax.Array, slots: int, count: jax.Array):
    """Angles ``2 pi sg(theta) k / N' - pi theta + 2 pi theta u / N'`` for ``k < N'``.

    ``u``: ``[S, 1]``. Returns wrapped angles ``[S, slots]`` (0 in invalid slots) and the
    ``[slots]`` validity mask. ``theta`` is detached in the ``k`` term, as in the reference, so
    ``d r_k / d theta = -pi + 2 pi u / N'``.
    """
    k = jnp.arange(slots, dtype=jnp.float32)[None, :]
    n = count.astype(jnp.float32)
    r = TWO_PI * jax.lax.stop_gradient(theta) * k / n - math.pi * theta + TWO_PI * theta * u / n
    valid = jnp.arange(slots)[None, :] < count
    return jnp.where(valid, jnp.mod(r, TWO_PI), 0.0), valid[0]


def _with_mirror(angles: jax.Array, count: jax.Array, mirror_s: jax.Array, mirror_hard: jax.Array):
    """Packs ``R`` rotation slots (first ``R'`` valid) and a mirror decision into ``2R`` slots:
    ``R'`` unmirrored, then ``R'`` mirrored when the mirror fires, then padding."""
    slots = angles.shape[-1]
    j = jnp.arange(2 * slots)[None, :]
    is_mirrored = j >= count
    rot_idx = jnp.clip(jnp.where(is_mirrored, j - count, j), 0, slots - 1)[0]
    valid = (j < count) | ((j < 2 * count) & (mirror_hard > 0.5))
    r = jnp.where(valid, angles[:, rot_idx], 0.0)
    m = jnp.where(is_mirrored & valid, -mirror_s, 1.0) * jnp.ones_like(r)
    return jnp.stack([r, m], axis=-1), valid[0]


def _keep_compact(grid_angles: jax.Array, keep: jax.Array, key: jax.Array, temperature):
    """Per-element straight-through keep decisions on a grid (identity always kept); the kept
    angles (multiplied by their sample, as in the reference) are moved to the front."""
    s, hard = relaxed_bernoulli_st(key, 2.0 * keep, temperature)
    s = jnp.concatenate([jnp.ones((1,), s.dtype), s])
    hard = jnp.concatenate([jnp.ones((1,), hard.dtype), hard])
    order = jnp.argsort(1.0 - hard, stable=True)
    count = jnp.sum(hard).astype(jnp.int32)
    valid = jnp.arange(grid_angles.shape[0]) < count
    angles = jnp.where(valid, (grid_angles * s)[order], 0.0)
    return angles, count


def sample_rotations(
    key: jax.Array | None,
    rot: int,
    *,
    num_samples: int,
    sampling: str,
    partial: bool,
    params: Mapping[str, jax.typing.ArrayLike],
    temperature: jax.typing.ArrayLike,
    signed_ceil: bool,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """The rotation part of a sample: ``(angles [S, R], R' (int32), mirror key)``.

    ``key`` (``None`` only when nothing is random) is split in three (offset, keep, mirror)
    whatever the group, so SE2 and E2 draw the same rotations from the same key. Partial random
    sampling draws the learned interval (``params["theta"]``), partial deterministic sampling
    one keep decision per non-identity grid rotation (``params["keep"]``), full sampling the
    grid (with one random offset per row for ``sampling="random"``).
    """
    spin = rot > 1
    k_offset, k_keep, k_mirror = jax.random.split(key, 3) if key is not None else (None,) * 3
    if partial and spin and sampling == "random":
        theta = params.get("theta")
        if theta is None:
            raise ValueError("random partial sampling needs theta")
        theta = jnp.asarray(theta, jnp.float32).reshape(())
        count = partial_count(rot, theta, signed_ceil=signed_ceil)
        u = jax.random.uniform(k_offset, (num_samples, 1), jnp.float32)
        angles, _ = _stratified_interval(theta, u, rot, count)
    elif partial and spin:
        keep = params.get("keep")
        if keep is None or jnp.shape(keep) != (rot - 1,):
            raise ValueError(f"deterministic partial sampling needs keep of shape ({rot - 1},)")
        grid = TWO_PI * jnp.arange(rot, dtype=jnp.float32) / rot
        angles, count = _keep_compact(grid, jnp.asarray(keep, jnp.float32), k_keep, temperature)
        angles = jnp.broadcast_to(angles, (num_samples, rot))
    else:
        count = jnp.asarray(rot, jnp.int32)
        angles = TWO_PI * jnp.arange(rot, dtype=jnp.float32) / rot
        angles = jnp.broadcast_to(angles if spin else jnp.zeros_like(angles), (num_samples, rot))
        if sampling == "random" and spin:
            u = jax.random.uniform(k_offset, (num_samples, 1), jnp.float32)
            angles = jnp.mod(angles + TWO_PI * u / rot, TWO_PI)
    return angles, count, k_mirror


def rotation_specs(rot: int, sampling: str) -> tuple[DistributionSpec, ...]:
    """The rotation axis's learnable parameters: ``theta`` (random sampling) or ``keep``
    (deterministic, one per non-identity grid rotation), none for a single rotation."""
    if rot <= 1:
        return ()
    if sampling == "random":
        return (DistributionSpec("theta"),)
    return (DistributionSpec("keep", shape=(rot - 1,), relaxed=True),)


def kept_rotations(rot: int, params: Mapping[str, np.ndarray], *, signed_ceil: bool) -> int:
    """Host ``R'``: ``min(ceil(R |theta|), R)`` with ``theta`` (:func:`partial_count`), ``1 +``
    the number of keep probabilities ``sigmoid(2 keep) >= 1/2`` with ``keep`` (the identity
    is always kept), else all ``R``."""
    theta, keep = params.get("theta"), params.get("keep")
    if theta is not None and keep is not None:
        raise ValueError("a layer learns theta (random sampling) or keep (deterministic), not both")
    if rot == 1:
        return 1
    if theta is not None:
        t = np.float32(np.asarray(theta, np.float32).reshape(()))
        with np.errstate(invalid="ignore"):
            raw = (
                np.abs(np.ceil(np.float32(rot) * t))
                if signed_ceil
                else np.ceil(np.float32(rot) * np.abs(t))
            )
        if not np.isfinite(raw):
            raise ValueError(f"theta of a partial layer is not finite: {float(t)}")
        return int(np.clip(raw, 1, rot))
    if keep is not None:
        keep = np.asarray(keep, np.float64)
        if keep.shape != (rot - 1,):
            raise ValueError(f"keep must have shape ({rot - 1},), got {keep.shape}")
        return 1 + int(np.sum(host_sigmoid(2.0 * keep) >= 0.5))
    return rot


def sample_elements(
    group: Group,
    key: jax.Array | None,
    num_elements: int,
    *,
    num_samples: int = 1,
    sampling: str = "random",
    partial: bool = False,
    theta: jax.typing.ArrayLike | None = None,
    mirror: jax.typing.ArrayLike | None = None,
    keep: jax.typing.ArrayLike | None = None,
    temperature: jax.typing.ArrayLike = 0.5,
    **params: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    """Samples ``num_elements`` slots of ``group`` for ``num_samples`` independent rows
    (:meth:`Group.sample` with the distribution parameters as keywords).

    Args:
      group: the group (or its name).
      key: PRNG key (may be ``None`` when nothing is random: full deterministic grids).
      num_elements: ``N`` (static).
      num_samples: ``S`` (1, or the batch size when sampling per batch element).
      sampling: ``"deterministic"`` (regular grid; with ``partial`` one keep decision per
        non-identity grid element) or ``"random"`` (stratified grid with one shared offset per
        row; with ``partial`` the learned interval ``[-pi theta, pi theta)``).
      partial: sample from the learned distribution instead of the whole group.
      theta: rotation half-width (units of pi), random partial, groups with rotations.
      mirror: mirror parameter ``p``; mirror probability ``sigmoid(2 p)`` (partial, mirror groups).
      keep: keep parameters ``[R - 1]``; keep probability ``sigmoid(2 p)`` (deterministic
        partial, groups with rotations).
      temperature: relaxed-Bernoulli temperature.
      params: further distribution parameters of groups that have them, by name.

    Returns:
      ``(elements [S, N, d], mask [S, N])``.
    """
    named = {"theta": theta, "mirror": mirror, "keep": keep, **params}
    return get_group(group).sample(
        key,
        num_elements,
        num_samples=num_samples,
        sampling=sampling,
        partial=partial,
        params={k: v for k, v in named.items() if v is not None},
        temperature=temperature,
    )


def subset_size(
    group: Group,
    num_elements: int,
    *,
    theta: jax.typing.ArrayLike | None = None,
    keep: jax.typing.ArrayLike | None = None,
    mirror: jax.typing.ArrayLike | None = None,
    **params: jax.typing.ArrayLike,
) -> tuple[int, int]:
    """The size of the subset a layer's distribution keeps at its current parameters (the N'
    rule used by training logs and the subset analysis), as host ints ``(R', N')``.

    ``R'`` counts rotations: ``min(ceil(R |theta|), R)`` with ``theta`` (:func:`partial_count`,
    signed for mirror groups), ``1 +`` the number of keep probabilities ``sigmoid(2 keep)``
    that are at least 1/2 with ``keep`` (the identity is always kept), else all ``R``
    rotations. ``N' = 2 R'`` for mirror groups when the mirror probability ``sigmoid(2 mirror)``
    is at least 1/2 (or without a mirror parameter), else ``R'``. Every choice is the mode
    of its Bernoulli, so ``(R', N')`` is the most probable sampled subset's size
    (:meth:`Group.summarize`).
    """
    named = {"theta": theta, "mirror": mirror, "keep": keep, **params}
    host = {k: np.asarray(jax.device_get(v)) for k, v in named.items() if v is not None}
    group = get_group(group)
    summary = group.summarize(group.check_num_elements(num_elements), host)
    return summary.kept("rotation"), summary.num_elements
