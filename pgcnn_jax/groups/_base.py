"""The group protocol: what a stabiliser group owns, and the registry of groups by name.

A group is a value of its own type (a frozen, hashable dataclass, usable as a static attribute
of NNX modules and as a ``jit`` static argument). Everything that depends on *which* group a
layer uses lives on the group: its algebra, its deterministic grid, how it samples elements
(full and partial, the distribution parameters it needs and their initial values), its element
count rule ``N'``, its action on images and the group-axis permutation an element induces.
Code outside :mod:`pgcnn_jax.groups` only calls these methods; it never branches on a group's
name or on what the group contains.

Adding a group is one file with a subclass of :class:`Group` and a call to
:func:`register_group`.

Elements are arrays with a trailing axis ``d`` (:attr:`Group.dim`); ``[S, N, d]`` stacks are
``S`` samples of ``N`` slots.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from pgcnn_jax.groups import _action
from pgcnn_jax.groups._values import (  # noqa: F401  (host_sigmoid: used by the groups)
    Distribution,
    DistributionSpec,
    ImpliedSettings,
    SubsetSummary,
    host_sigmoid,
)

TWO_PI = 2.0 * math.pi

# Wrapped angles closer than this to 0 or 2 pi are the identity rotation up to float32
# rounding: 8 ulps of 2 pi in float32 (3.8e-6 rad).
ANGLE_SNAP = 8 * float(np.spacing(np.float32(TWO_PI)))

SAMPLING_METHODS = ("deterministic", "random")


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


@dataclasses.dataclass(frozen=True)
class Group(abc.ABC):
    """A planar stabiliser group ``H`` (the roto-translation group is ``R^2 x| H``, translations
    handled by the convolution).

    Class attributes:
      name: registry name (``"se2"``, ``"e2"``, ...).
      dim: size ``d`` of the trailing element axis.
      fixed_num_elements: the only valid ``num_elements`` for finite groups sampled whole
        (``t2``: 1, ``mirror``: 2), else ``None``.
      label: how tables and logs print the group (``"SE(2)"``).
      trivial: the group has only the identity (a plain CNN: no partial / full variants).
    """

    name: ClassVar[str]
    dim: ClassVar[int]
    fixed_num_elements: ClassVar[int | None] = None
    label: ClassVar[str] = ""
    trivial: ClassVar[bool] = False

    # ------------------------------------------------------------------ structure
    def check_num_elements(self, num_elements: int) -> int:
        """Validates a number of sampled elements (slots ``N``) for this group and returns it."""
        if isinstance(num_elements, bool) or not isinstance(num_elements, int | np.integer):
            raise ValueError(f"num_elements must be an int, got {num_elements!r}")
        num_elements = int(num_elements)
        if num_elements < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements}")
        fixed = self.fixed_num_elements
        if fixed is not None and num_elements != fixed:
            count = {1: "one element", 2: "two elements"}.get(fixed, f"{fixed} elements")
            raise ValueError(
                f"group {self.name!r} has exactly {count}; got num_elements={num_elements}"
            )
        return num_elements

    def num_rotations(self, num_elements: int) -> int:
        """Number of distinct rotation slots ``R`` among ``num_elements`` slots."""
        return num_elements

    def implied_settings(self) -> ImpliedSettings:
        """Model settings this group fixes (e.g. ``t2``: one element, deterministic sampling,
        not partial); nothing for most."""
        return ImpliedSettings()

    # ------------------------------------------------------------------ algebra
    @abc.abstractmethod
    def identity(self, shape: tuple[int, ...] = ()) -> jax.Array:
        """The identity element(s), shape ``[*shape, d]``."""

    @abc.abstractmethod
    def product(self, g1: jax.typing.ArrayLike, g2: jax.typing.ArrayLike) -> jax.Array:
        """Group product ``g1 * g2`` (broadcasting over leading axes)."""

    @abc.abstractmethod
    def inverse(self, g: jax.typing.ArrayLike) -> jax.Array:
        """Group inverse."""

    @abc.abstractmethod
    def matrix(self, g: jax.typing.ArrayLike) -> jax.Array:
        """Matrix ``A(g)`` acting on ``(row, col)`` vectors, shape ``[..., 2, 2]``."""

    def inverse_matrix(self, g: jax.typing.ArrayLike) -> jax.Array:
        """``A(g)^{-1}``, computed as the matrix of the inverse element ``A(g^{-1})``, shape
        ``[..., 2, 2]`` (REFERENCE 1.3): under partial sampling relaxed straight-through
        samples carry gradients, and theirs must be the ones of ``A(g^{-1})``."""
        return self.matrix(self.inverse(g))

    def relative(self, g_out: jax.typing.ArrayLike, g_in: jax.typing.ArrayLike) -> jax.Array:
        """Outer relative elements ``u_i^{-1} v_j``: ``[S, N_out, d], [S, N_in, d]`` ->
        ``[S, N_out, N_in, d]`` (leading ``S`` broadcasts)."""
        u = jnp.asarray(g_out)[..., :, None, :]
        v = jnp.asarray(g_in)[..., None, :, :]
        return self.product(self.inverse(u), v)

    @abc.abstractmethod
    def normalize(self, g: jax.typing.ArrayLike) -> jax.Array:
        """Kernel-net encoding of (relative) elements, ``[..., d]`` in ``[-1, 1]``."""

    def kernel_measure(self, elements: jax.Array) -> jax.Array:
        """Factor multiplying the kernel rendered at output element ``u`` (the Haar-measure
        term of the spatial integral, ``|det A(u)|^{-1}``), ``[S, N] -> [S, N]``; 1 for
        groups acting by isometries."""
        return jnp.ones(jnp.shape(elements)[:-1], jnp.float32)

    def kernel_extent(self, num_elements: int) -> float:
        """Largest factor by which the group stretches a kernel's support (1 for isometries):
        kernels of scaling groups need a grid this much larger."""
        return 1.0

    @abc.abstractmethod
    def distance(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """A distance between elements (0 iff equal up to float rounding), ``[...]``."""

    def as_element(self, element) -> jax.Array:
        """One element from user input (a sequence of ``d`` numbers)."""
        e = jnp.asarray(element, jnp.float32).reshape(-1)
        if e.shape != (self.dim,):
            raise ValueError(
                f"element {element!r} does not fit group {self.name!r} (expects {self.dim} numbers)"
            )
        return e

    def describe_element(self, element) -> str:
        """A short human-readable description of one element."""
        return "(" + ", ".join(f"{float(v):.4g}" for v in np.asarray(element).reshape(-1)) + ")"

    # ------------------------------------------------------------------ grids and sampling
    @abc.abstractmethod
    def grid(self, num_elements: int) -> jax.Array:
        """The deterministic grid of ``num_elements`` slots, ``[N, d]``."""

    def moves(self, num_elements: int) -> bool:
        """Whether random sampling of ``num_elements`` slots can give elements other than the
        grid (i.e. a layer that resamples changes its elements)."""
        return False

    def needs_key(self, num_elements: int, sampling: str, partial: bool) -> bool:
        """Whether :meth:`sample` needs a PRNG key."""
        return partial or (sampling == "random" and self.moves(num_elements))

    def sample_args(
        self, key: jax.Array | None, num_elements: int, sampling: str, num_samples: int, partial
    ) -> tuple[int, jax.Array | None]:
        """The checks every :meth:`sample` starts with: ``(N, key)`` with ``N`` validated and
        ``key`` set to ``None`` when nothing is random; ``ValueError`` for an unknown
        ``sampling``, ``num_samples < 1`` or a missing key that is needed."""
        n = self.check_num_elements(num_elements)
        if sampling not in SAMPLING_METHODS:
            raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLING_METHODS}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not self.needs_key(n, sampling, partial):
            return n, None
        if key is None:
            raise ValueError("a PRNG key is needed to sample group elements (pass rngs=...)")
        return n, key

    def distribution(self, num_elements: int, sampling: str) -> Distribution:
        """The learnable parameters of a partial layer with ``num_elements`` slots and this
        ``sampling`` (empty: nothing to learn)."""
        return Distribution()

    def check_partial(self, num_elements: int, sampling: str) -> None:
        """Raises ``ValueError`` when a partial layer makes no sense for this group."""

    @abc.abstractmethod
    def sample(
        self,
        key: jax.Array | None,
        num_elements: int,
        *,
        num_samples: int = 1,
        sampling: str = "random",
        partial: bool = False,
        params: Mapping[str, jax.typing.ArrayLike] | None = None,
        temperature: jax.typing.ArrayLike = 0.5,
    ) -> tuple[jax.Array, jax.Array]:
        """``(elements [S, N, d], mask [S, N])``: ``N`` slots, the first ``N'`` valid; invalid
        slots hold the identity. ``params`` maps the names of :meth:`distribution` to values
        (partial sampling)."""

    @abc.abstractmethod
    def summarize(
        self, num_elements: int, params: Mapping[str, np.ndarray] | None = None
    ) -> SubsetSummary:
        """What a layer with ``num_elements`` slots keeps at host parameter values ``params``
        (``None`` or empty for a full layer): every choice at the mode of its distribution."""

    def adaptive_count(self, num_elements: int, params: Mapping[str, np.ndarray]) -> int | None:
        """The slots a sample can make valid at host parameters ``params`` when that count is
        a function of the parameters (adaptive execution runs the layer on exactly that many
        slots), ``None`` when the count is random per step (the layer stays masked)."""
        return None

    def detach_discrete(self, elements: jax.Array) -> jax.Array:
        """``elements`` with their discrete coordinates (e.g. the mirror sign) cut from the
        gradient (Augerino flips images by value, not along a differentiable path)."""
        return elements

    # ------------------------------------------------------------------ action on images
    def exact_elements(self) -> list[tuple[float, ...]]:
        """The non-identity elements that act exactly on the pixel grid (quarter turns and
        flips): the elements exact equivariance is tested on."""
        return []

    def transform_images(
        self, x: jax.typing.ArrayLike, elements: jax.typing.ArrayLike
    ) -> jax.Array:
        """``(L_g x)(p) = x(A(g)^{-1} p)`` for every element: ``x [B, H, W, C]``, ``elements
        [M, d]`` -> ``[M, B, H, W, C]`` (bilinear about the image centre, zero padding,
        differentiable in the elements)."""
        elements = jnp.asarray(elements, jnp.float32)
        if elements.ndim != 2 or elements.shape[-1] != self.dim:
            raise ValueError(
                f"elements must be [M, {self.dim}] for group {self.name!r}, got {elements.shape}"
            )
        return _action.resample(x, self.inverse_matrix(elements))

    def act(self, x: jax.typing.ArrayLike, element, *, exact: bool | None = None) -> jax.Array:
        """``L_g x`` on the spatial axes 1, 2 of ``x [B, H, W, ...]`` for one concrete element.

        Elements whose matrix is a signed permutation (quarter turns, flips) move pixels
        exactly; others resample bilinearly (``x`` must then be ``[B, H, W, C]``). ``exact=True``
        raises ``ValueError`` instead of resampling; ``exact=False`` always resamples.
        """
        e = self.as_element(element)
        b = np.asarray(self.inverse_matrix(e), np.float64)
        if exact is not False and _action.is_grid_matrix(b):
            return _action.permute_pixels(x, b, element)
        if exact:
            raise ValueError(
                f"element {np.asarray(element).tolist()} does not act exactly on the pixel "
                "grid; use rotations by multiples of 90 degrees and flips"
            )
        return self.transform_images(x, e[None])[0]

    def permutation(self, elements: jax.Array, element, mask: jax.Array | None = None) -> jax.Array:
        """Indices ``perm [S, N]`` with ``u_{perm[i]} = g^{-1} u_i``: how acting with ``g``
        permutes the group axis of features on ``elements [S, N, d]``.

        Raises ``ValueError`` if the valid elements are not closed under ``g`` (then no exact
        prediction exists, e.g. a partial layer and an element outside its subset).
        """
        g_inv = self.inverse(self.as_element(element))
        target = self.product(g_inv, elements)  # [S, N, d]
        dist = self.distance(target[:, :, None, :], elements[:, None, :, :])  # [S, N, N]
        if mask is not None:
            dist = jnp.where(mask[:, None, :] > 0, dist, jnp.inf)
        perm = jnp.argmin(dist, axis=-1)
        best = jnp.min(dist, axis=-1)
        valid = np.ones(best.shape, bool) if mask is None else np.asarray(mask) > 0
        if np.any(np.asarray(best)[valid] > 1e-4):
            raise ValueError(
                f"the sampled elements are not closed under element "
                f"{np.asarray(element).tolist()}: no exact prediction of the transformed output "
                "exists"
            )
        return jnp.where(jnp.asarray(valid), perm, jnp.arange(perm.shape[-1])[None, :])


_REGISTRY: dict[str, Callable[..., Group]] = {}


def register_group(name: str, factory: Callable[..., Group]) -> None:
    """Registers ``factory`` (a :class:`Group` subclass or a function returning one) under
    ``name``; :func:`get_group` calls it with the keyword arguments it gets."""
    key = str(name).lower()
    if key in _REGISTRY:
        raise ValueError(f"group {name!r} is already registered")
    _REGISTRY[key] = factory


def registered_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_group(name: str | Group, **kwargs) -> Group:
    """Returns the group called ``name`` (one of :data:`GROUP_NAMES`); a :class:`Group` passes
    through. Keyword arguments configure groups that take them.

    >>> get_group("e2").dim
    2
    """
    if isinstance(name, Group):
        if kwargs:
            raise ValueError(f"got a group value and settings {kwargs}; pass the name instead")
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown group {name!r}; expected one of {registered_names()}")
    try:
        return _REGISTRY[key](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad settings {kwargs} for group {name!r}: {e}") from None
