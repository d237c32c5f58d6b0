"""Equivariance profile: how much each layer's output moves when the input is rotated."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pgcnn_jax.analysis._record import record_features
from pgcnn_jax.models import resample
from pgcnn_jax.nn import group_max_pool


def rotation_matrices(angles_deg: Sequence[float]) -> np.ndarray:
    """``A(g)^{-1}`` of the SE2 rotations ``angles_deg``, ``[A, 2, 2]`` float32, with the cosine
    and sine of multiples of 90 degrees snapped to exact 0 / +-1 so those rotations are exact."""
    deg = np.asarray(angles_deg, np.float64).reshape(-1)
    rad = np.deg2rad(deg)
    cos, sin = np.cos(rad), np.sin(rad)
    quarter = deg / 90.0
    exact = np.abs(quarter - np.round(quarter)) < 1e-9
    k = np.round(quarter).astype(np.int64) % 4
    cos = np.where(exact, np.array([1.0, 0.0, -1.0, 0.0])[k], cos)
    sin = np.where(exact, np.array([0.0, 1.0, 0.0, -1.0])[k], sin)
    return np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2).astype(np.float32)


def rotate_images(x: jax.Array, angle_deg: float) -> jax.Array:
    """Applies the rotation element ``angle_deg`` to ``[B, H, W, C]`` images about their centre:
    ``(L_g x)(p) = x(A(g)^{-1} p)`` as in :func:`pgcnn_jax.testing.transform_image` (``+90``
    is ``rot90(x, k=-1)``, clockwise on screen), bilinear with zero padding
    (:func:`pgcnn_jax.models.resample`). Multiples of 90 degrees are exact."""
    return resample(jnp.asarray(x), rotation_matrices([angle_deg]))[0]


def _disc(h: int, w: int) -> jax.Array:
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    r = np.hypot(rows - (h - 1) / 2.0, cols - (w - 1) / 2.0)
    return jnp.asarray(r <= min(h, w) / 2.0 - 0.5, jnp.float32)[None, :, :, None]


@dataclasses.dataclass(frozen=True)
class EquivarianceProfile:
    """``errors[layer][i]``: relative change of the layer's group-pooled output at
    ``angles_deg[i]``, ``||P(h(R x)) - R P(h(x))|| / ||R P(h(x))||`` inside the central disc
    (``P`` = max over the valid group slots)."""

    angles_deg: tuple[float, ...]
    errors: dict[str, tuple[float, ...]]

    def to_dict(self) -> dict:
        return {
            "angles_deg": list(self.angles_deg),
            "errors": {k: list(v) for k, v in self.errors.items()},
        }


@functools.partial(jax.jit, static_argnums=(0, 3))
def _pooled(graphdef, state, x: jax.Array, seed: int) -> dict[str, tuple[jax.Array, jax.Array]]:
    model = nnx.merge(graphdef, state)
    with record_features(model) as feats:
        model(x, rngs=nnx.Rngs(sample=seed, dropout=seed))
    # A pytree dict comes back sorted by key: carry the forward position along.
    return {k: (jnp.asarray(i), group_max_pool(v)) for i, (k, v) in enumerate(feats.items())}


def _pooled_features(graphdef, state, x: jax.Array, seed: int) -> dict[str, jax.Array]:
    """Every conv output of one forward (in forward order), max-pooled over the valid group
    slots."""
    out = _pooled(graphdef, state, x, seed)
    return {k: v for k, (_, v) in sorted(out.items(), key=lambda item: int(item[1][0]))}


def equivariance_profile(
    model: nnx.Module, x: jax.Array, angles_deg: Sequence[float], *, seed: int = 0
) -> EquivarianceProfile:
    """Per layer, the relative output change when the input is rotated by each angle.

    The model runs in eval mode (jit-compiled) with the same sampling key for both passes. For
    multiples of 90 degrees the rotation is exact, so the number is the layer's equivariance
    error; other angles add the error of bilinear interpolation.
    """
    model.eval()
    x = jnp.asarray(x)
    graphdef, state = nnx.split(model)
    base = _pooled_features(graphdef, state, x, seed)
    errors: dict[str, list[float]] = {k: [] for k in base}
    for angle in angles_deg:
        moved = _pooled_features(graphdef, state, rotate_images(x, angle), seed)
        for name, ref in base.items():
            want = rotate_images(ref, angle)
            disc = _disc(ref.shape[1], ref.shape[2])
            num = jnp.linalg.norm((moved[name] - want) * disc)
            den = jnp.maximum(jnp.linalg.norm(want * disc), 1e-12)
            errors[name].append(float(num / den))
    return EquivarianceProfile(
        tuple(float(a) for a in angles_deg), {k: tuple(v) for k, v in errors.items()}
    )
