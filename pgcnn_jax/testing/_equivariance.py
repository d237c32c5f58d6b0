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
    """Result of one check: the element (its coordinates in the group's encoding, e.g.
    ``(angle, mirror)``) and the max / mean absolute error, plus the max error relative to the
    largest output magnitude."""

    element: tuple[float, ...]
    max_error: float
    mean_error: float
    relative_error: float
    scale: float
    description: str = ""

    def __str__(self) -> str:
        what = self.description or str(self.element)
        return (
            f"element ({what}): max error {self.max_error:.3e}, mean {self.mean_error:.3e}, "
            f"relative {self.relative_error:.3e}"
        )


def _as_element(group: Group, element) -> jax.Array:
    return group.as_element(element)


def transform_image(x: jax.typing.ArrayLike, group: Group | str, element) -> jax.Array:
    """``(L_g x)(p) = x(A(g)^{-1} p)`` on the spatial axes 1, 2 of ``[B, H, W, ...]``, exactly
    (:meth:`pgcnn_jax.groups.Group.act` with ``exact=True``): ``ValueError`` for elements
    that do not act exactly on the pixel grid."""
    return get_group(group).act(x, element, exact=True)


def group_permutation(group: Group | str, elements: jax.Array, element, mask=None) -> jax.Array:
    """Indices ``perm [S, N]`` with ``u_{perm[i]} = g^{-1} u_i``
    (:meth:`pgcnn_jax.groups.Group.permutation`).

    Raises ``ValueError`` if the valid elements are not closed under ``g`` (then no exact
    prediction exists, e.g. a partial layer and an element outside its subset).
    """
    return get_group(group).permutation(elements, element, mask)


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
            return EquivarianceError(_coords(e), diff, diff, 1.0, diff, group.describe_element(e))
    else:
        got, want = jnp.asarray(y_t), expected
    err = jnp.abs(got - want)
    scale = float(jnp.maximum(jnp.max(jnp.abs(want)), 1e-12))
    max_err = float(jnp.max(err))
    return EquivarianceError(
        _coords(e),
        max_err,
        float(jnp.mean(err)),
        max_err / scale,
        scale,
        group.describe_element(e),
    )


def _coords(e: jax.Array) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(e, np.float64).reshape(-1))


def grid_elements(group: Group | str) -> list[tuple[float, ...]]:
    """The non-identity elements of ``group`` that act exactly on the pixel grid
    (:meth:`pgcnn_jax.groups.Group.exact_elements`)."""
    return get_group(group).exact_elements()


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
