"""Exact equivariance checks on the pixel grid (STYLE 5-6).

A group element ``g`` acts on an image by ``(L_g f)(x) = f(A(g)^{-1} x)`` on centred
``(row, col)`` coordinates; on group features by the same spatial map and by moving the
feature at ``u`` to ``g u``: ``(L_g h)(x, u) = h(A(g)^{-1} x, g^{-1} u)``. Only elements whose
matrix is a signed permutation (multiples of 90 degrees, flips) act exactly on the grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgcnn_jax.groups import Group, get_group
from pgcnn_jax.nn import GroupFeatures


@dataclasses.dataclass(frozen=True)
class EquivarianceError:
    """Result of one check: the element (``(angle, mirror)``) and the max / mean absolute
    error, plus the max error relative to the largest output magnitude."""

    element: tuple[float, float]
    max_error: float
    mean_error: float
    relative_error: float
    scale: float

    def __str__(self) -> str:
        angle = np.degrees(self.element[0])
        return (
            f"element (rotation {angle:.1f} deg, mirror {self.element[1]:+.0f}): max error "
            f"{self.max_error:.3e}, mean {self.mean_error:.3e}, relative {self.relative_error:.3e}"
        )


def _as_element(group: Group, element) -> jax.Array:
    e = jnp.asarray(element, jnp.float32).reshape(-1)
    if e.shape[0] == 1 and group.dim == 2:
        e = jnp.concatenate([e, jnp.ones((1,))])
    if e.shape != (group.dim,):
        raise ValueError(
            f"element {element!r} does not fit group {group.name!r} (expects {group.dim} numbers)"
        )
    return e


def _grid_matrix(group: Group, element: jax.Array) -> np.ndarray:
    b = np.asarray(group.inverse_matrix(element), np.float64)
    rounded = np.round(b)
    if np.max(np.abs(b - rounded)) > 1e-5:
        raise ValueError(
            f"element {np.asarray(element).tolist()} does not act exactly on the pixel grid; "
            "use rotations by multiples of 90 degrees and flips"
        )
    return rounded.astype(np.int64)


def transform_image(x: jax.typing.ArrayLike, group: Group | str, element) -> jax.Array:
    """``(L_g x)(p) = x(A(g)^{-1} p)`` on the spatial axes 1, 2 of ``[B, H, W, ...]``."""
    group = get_group(group)
    x = jnp.asarray(x)
    b = _grid_matrix(group, _as_element(group, element))
    h, w = x.shape[1], x.shape[2]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    q = np.stack([rows, cols], -1) - centre
    src = np.rint(q @ b.T + centre).astype(np.int64)
    if src.min() < 0 or src[..., 0].max() >= h or src[..., 1].max() >= w:
        raise ValueError(f"element {element!r} does not map a {h}x{w} grid onto itself")
    return x[:, src[..., 0], src[..., 1]]


def _distance(group: Group, a: jax.Array, b: jax.Array) -> jax.Array:
    d = jnp.abs(jnp.angle(jnp.exp(1j * (a[..., 0] - b[..., 0]))))
    if group.has_mirror:
        d = d + jnp.abs(a[..., 1] - b[..., 1])
    return d


def group_permutation(group: Group | str, elements: jax.Array, element, mask=None) -> jax.Array:
    """Indices ``perm [S, N]`` with ``u_{perm[i]} = g^{-1} u_i``.

    Raises ``ValueError`` if the valid elements are not closed under ``g`` (then no exact
    prediction exists, e.g. a partial layer and an element outside its subset).
    """
    group = get_group(group)
    g_inv = group.inverse(_as_element(group, element))
    target = group.product(g_inv, elements)  # [S, N, d]
    dist = _distance(group, target[:, :, None, :], elements[:, None, :, :])  # [S, N, N]
    if mask is not None:
        dist = jnp.where(mask[:, None, :] > 0, dist, jnp.inf)
    perm = jnp.argmin(dist, axis=-1)
    best = jnp.min(dist, axis=-1)
    valid = np.ones(best.shape, bool) if mask is None else np.asarray(mask) > 0
    if np.any(np.asarray(best)[valid] > 1e-4):
        raise ValueError(
            f"the sampled elements are not closed under element {np.asarray(element).tolist()}: "
            "no exact prediction of the transformed output exists"
        )
    return jnp.where(jnp.asarray(valid), perm, jnp.arange(perm.shape[-1])[None, :])


def transform_features(
    h: GroupFeatures, group: Group | str, element, *, wrong_direction: bool = False
) -> GroupFeatures:
    """``(L_g h)(x, u) = h(A(g)^{-1} x, g^{-1} u)`` on the sampled elements of ``h``.

    ``wrong_direction`` moves the group axis the wrong way (``g u`` instead of ``g^{-1} u``):
    a negative control that must fail.
    """
    group = get_group(group)
    g = _as_element(group, element)
    moved = group.inverse(g) if wrong_direction else g
    perm = group_permutation(group, h.elements, moved, h.mask)  # [S, N]
    values = transform_image(h.values, group, g)
    idx = jnp.broadcast_to(perm[:, None, None, :, None], (values.shape[0], 1, 1, perm.shape[1], 1))
    return h.replace_values(jnp.take_along_axis(values, idx, axis=3))


def _transform_output(y, group, element, wrong_direction):
    if isinstance(y, GroupFeatures):
        return transform_features(y, group, element, wrong_direction=wrong_direction)
    y = jnp.asarray(y)
    return transform_image(y, group, element) if y.ndim >= 3 else y


def equivariance_error(
    fn: Callable[[jax.Array], GroupFeatures | jax.Array],
    x: jax.typing.ArrayLike,
    group: Group | str,
    element,
    *,
    wrong_direction: bool = False,
) -> EquivarianceError:
    """Compares ``fn(L_g x)`` with ``L_g fn(x)``.

    ``fn`` must be deterministic (reuse the same sampling key in both calls). Outputs may be
    :class:`GroupFeatures` (spatial map + group-axis permutation), ``[B, H, W, C]`` maps
    (spatial map only) or ``[B, C]`` / ``[B]`` (invariant).
    """
    group = get_group(group)
    e = _as_element(group, element)
    x = jnp.asarray(x)
    y = fn(x)
    y_t = fn(transform_image(x, group, e))
    expected = _transform_output(y, group, e, wrong_direction)
    if isinstance(y, GroupFeatures):
        got, want = y_t.values, expected.values
        if not np.array_equal(np.asarray(y_t.mask), np.asarray(y.mask)):
            diff = float(jnp.max(jnp.abs(y_t.values)) + jnp.max(jnp.abs(y.values)))
            return EquivarianceError(tuple(map(float, _pad(e))), diff, diff, 1.0, diff)
    else:
        got, want = jnp.asarray(y_t), expected
    err = jnp.abs(got - want)
    scale = float(jnp.maximum(jnp.max(jnp.abs(want)), 1e-12))
    max_err = float(jnp.max(err))
    return EquivarianceError(
        tuple(map(float, _pad(e))), max_err, float(jnp.mean(err)), max_err / scale, scale
    )


def _pad(e: jax.Array) -> np.ndarray:
    e = np.asarray(e, np.float64)
    return e if e.shape[0] == 2 else np.array([e[0], 1.0])


def grid_elements(group: Group | str) -> list[tuple[float, ...]]:
    """The non-identity elements of ``group`` that act exactly on the pixel grid."""
    group = get_group(group)
    angles = [np.pi / 2, np.pi, 3 * np.pi / 2] if group.has_rotations else []
    if not group.has_mirror:
        return [(a,) for a in angles]
    return [(a, 1.0) for a in angles] + [(a, -1.0) for a in [0.0, *angles]]


def assert_equivariant(
    fn: Callable[[jax.Array], GroupFeatures | jax.Array],
    x: jax.typing.ArrayLike,
    group: Group | str,
    elements: Sequence | None = None,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> list[EquivarianceError]:
    """Asserts ``fn(L_g x) == L_g fn(x)`` for every element (default: all 90-degree rotations
    and flips of ``group``); error allowed ``atol + rtol * max|output|``. Returns the reports."""
    group = get_group(group)
    reports = []
    for e in grid_elements(group) if elements is None else elements:
        r = equivariance_error(fn, x, group, e)
        if r.max_error > atol + rtol * r.scale:
            raise AssertionError(f"not equivariant: {r}")
        reports.append(r)
    return reports
