"""Lifting, (partial) group and pointwise group convolutions as NNX modules (REFERENCE 3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.groups import Distribution, Group, get_group, gumbel_temperature
from pgcnn_jax.kernels import KernelSpec
from pgcnn_jax.nn._conv_base import (
    _GroupConvBase,
    _SampledConvBase,
    float_images,
    group_conv_spec,
    joint_spec,
    sample_key,
)
from pgcnn_jax.nn._features import GroupFeatures, broadcast_mask
from pgcnn_jax.nn._functional import check_precision, conv2d, lifting_kernel
from pgcnn_jax.nn._partial import PartialGroupLayer, distribution_values, set_distribution
from pgcnn_jax.nn._sampling import SamplingSpec, as_sampling_spec
from pgcnn_jax.nn._variables import GumbelHorizon, GumbelStep, KernelNorm


def _check_finite_param(layer: str, name: str, value: jax.Array) -> None:
    """``ValueError`` when a concrete (not traced) distribution parameter holds NaN / inf: its
    sampler would silently yield no elements (NaN) or NaN elements (inf). Under ``jit`` the
    values are tracers and the training loop checks them instead."""
    if isinstance(value, jax.core.Tracer):
        return
    if not bool(jnp.all(jnp.isfinite(value))):
        raise ValueError(f"{layer} parameter {name!r} is not finite: {value}")


class LiftingConv(_SampledConvBase):
    """Lifting convolution ``[B, H, W, C_in] -> GroupFeatures [B, H', W', N, C_out]``.

    Always samples the whole group (REFERENCE 1.6, last paragraph): a regular grid, with one
    fresh random offset per forward (per batch element with ``sampling.per_example``) for
    random sampling. ``sampling`` is a :class:`~pgcnn_jax.nn.SamplingSpec` or a method name
    (``"random"`` / ``"deterministic"``); the keyword ``sample_per_batch_element`` (and the
    other :data:`~pgcnn_jax.nn.SAMPLING_KEYWORDS`) sets the spec's field. A spec with
    ``partial=True`` raises ``ValueError``. Integer (e.g. ``uint8``) or boolean images are cast
    to float32 with their values unchanged (no rescaling to ``[0, 1]``); complex ones are
    refused.

    ``kernel`` is a :class:`~pgcnn_jax.kernels.KernelSpec` (or a kernel-net name); the lifting
    kernel is always rendered jointly (``psi(A(u)^{-1} p)``, one net on positions): a spec with
    ``render="separable"`` raises ``ValueError`` (models pass ``spec.replace(render="joint")``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import pgcnn_jax as pg
      >>> lift = pg.nn.LiftingConv(in_features=1, out_features=4, group="se2", num_elements=4,
      ...                          kernel_size=5, sampling="deterministic", rngs=nnx.Rngs(0))
      >>> lift(jnp.ones((2, 9, 9, 1))).values.shape
      (2, 9, 9, 4, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        group: Group | str,
        num_elements: int,
        kernel_size: int = 7,
        sampling: SamplingSpec | str = SamplingSpec(),
        kernel: KernelSpec | str = "siren",
        padding: str = "same",
        use_bias: bool = True,
        precision: str | None = None,
        rngs: nnx.Rngs,
        **sampling_keywords,
    ):
        self.kernel = joint_spec(kernel, "LiftingConv")
        spec = as_sampling_spec(sampling, **sampling_keywords)
        if spec.partial:
            raise ValueError("LiftingConv samples the whole group: partial=True is not allowed")
        self._setup(
            in_features, out_features, group, num_elements, kernel_size, spec, padding,
            use_bias, precision,
        )  # fmt: skip
        self.kernel_net = self.kernel.make_net(2, out_features * in_features, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> GroupFeatures:
        x = float_images(jnp.asarray(x), "LiftingConv")
        if x.ndim != 4 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"LiftingConv expects input [B, H, W, {self.in_features}], got shape {x.shape}"
            )
        method = self.sampling.method
        needs_key = self.group.needs_key(self.num_elements, method, False)
        key = sample_key(rngs, "LiftingConv") if needs_key else None
        s = self._num_samples(x.shape[0])
        elements, mask = self.group.sample(key, self.num_elements, num_samples=s, sampling=method)
        bias = None if self.bias is None else self.bias[...]
        args = (self.kernel_net, self.group)
        sizes = (self.kernel_size, self.in_features, self.out_features)
        if self._chunked(x.shape[0], s):

            def render(e):
                return lifting_kernel(*args, e[None], *sizes)[0]

            y = self._conv_per_example(x, render, (elements,), self.padding, bias)
        else:
            weight = lifting_kernel(*args, elements, *sizes)
            self._record_norm(jnp.sum(jnp.square(weight)), bias)
            y = conv2d(x, weight, self.padding, precision=self.precision)
        return self._output(y, elements, mask, bias, mask_values=False)


class GroupConv(PartialGroupLayer, _SampledConvBase, _GroupConvBase):
    """Group convolution on sampled elements, full or partial (REFERENCE 3.2).

    ``sampling`` is a :class:`~pgcnn_jax.nn.SamplingSpec` (method, ``partial``,
    ``per_layer``, ``per_example``, the Gumbel schedule, ...) or a method name; the keywords
    ``partial``, ``sample_per_layer``, ``sample_per_batch_element``, ``gumbel_horizon`` and
    ``gumbel_temperatures`` (:data:`~pgcnn_jax.nn.SAMPLING_KEYWORDS`) set the spec's fields, so
    ``GroupConv(..., sampling="random", partial=True)`` is
    ``GroupConv(..., sampling=SamplingSpec("random", partial=True))``.

    Output elements are freshly sampled when the layer is partial or when
    ``sampling.per_layer`` with random sampling; otherwise the input elements are reused.
    A partial layer samples from the distribution its group defines
    (:meth:`~pgcnn_jax.groups.Group.distribution`), whose parameters it holds as attributes
    of their names (SE2 / E2: ``theta`` for random sampling, uniform on
    ``[-pi theta, pi theta)``, or ``keep`` for deterministic sampling, one straight-through
    Bernoulli per non-identity grid rotation; for groups with mirrors ``mirror``, a
    straight-through Bernoulli with probability ``sigmoid(2 mirror)``; see
    :meth:`~pgcnn_jax.nn.PartialGroupLayer.distribution`).
    Execution is masked (DESIGN 4): ``N`` slots, the first ``N'`` valid. With the static
    attribute ``active_elements = A`` (adaptive execution, set by
    :func:`pgcnn_jax.nn.set_active_elements`; ``None``, the default, is masked) the sampled
    ``(elements, mask)`` are cut to their first ``A`` slots right after sampling, so the
    kernel and the convolution shrink while every valid slot computes the numbers of the masked
    execution (to float rounding). ``A`` must cover every valid slot: a sample with a valid slot
    past ``A`` raises ``ValueError`` outside ``jit`` and turns the outputs to NaN under it.

    The kernel is described by ``kernel``, a :class:`~pgcnn_jax.kernels.KernelSpec` (or a
    kernel-net name ``s``, meaning ``KernelSpec(net=s)``), and rendered by the renderer its
    ``render`` names (:data:`pgcnn_jax.nn.GROUP_RENDERERS`): ``"joint"`` (one net on
    ``[A(u)^{-1} p, u^{-1} v]``, attribute ``kernel_net``) or ``"separable"``
    (``psi_S(A(u)^{-1} p)[o] psi_G(u^{-1} v)[o, c]``, a 1x1 group mixing then a depthwise
    spatial conv; ``kernel_net`` is then a :class:`~pgcnn_jax.kernels.SeparableKernelNet`).
    ``separable=True`` is a shortcut for ``kernel=spec.replace(render="separable")``;
    ``separable=False`` with a separable spec raises ``ValueError``; ``None`` (default) keeps
    the spec's render. Sampling, masking, ``active_elements`` and ``kernel_norm`` (the norm of
    the equivalent joint kernel) are the same for both.

    The relaxed-Bernoulli temperature falls linearly over ``gumbel_horizon`` optimiser steps
    (REFERENCE 1.7). Its step counter ``gumbel_step`` (:class:`GumbelStep`) is advanced by the
    train steps after every update (:func:`advance_gumbel_steps`), not by forward passes;
    the horizon ``gumbel_horizon`` is a :class:`GumbelHorizon` variable (traced state).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        group: Group | str,
        num_elements: int,
        kernel_size: int = 7,
        sampling: SamplingSpec | str = SamplingSpec(),
        kernel: KernelSpec | str = "siren",
        separable: bool | None = None,
        padding: str = "same",
        use_bias: bool = True,
        precision: str | None = None,
        rngs: nnx.Rngs,
        **sampling_keywords,
    ):
        self.kernel = group_conv_spec(kernel, separable)
        spec = as_sampling_spec(sampling, **sampling_keywords)
        self._setup(
            in_features, out_features, group, num_elements, kernel_size, spec, padding,
            use_bias, precision,
        )  # fmt: skip
        # Train / eval flag (``model.train()`` / ``model.eval()``); sampling is the same in both
        # modes (REFERENCE 1.8) and the Gumbel step only moves with optimiser steps.
        self.deterministic = False
        # Adaptive execution (DESIGN 4): a static slot count, part of the graphdef.
        self.active_elements: int | None = None
        distribution = Distribution()
        if spec.partial:
            self.group.check_partial(num_elements, spec.method)
            distribution = self.group.distribution(num_elements, spec.method)
        set_distribution(self, distribution)
        step = horizon = None
        if distribution.relaxed:
            step = GumbelStep(jnp.zeros((), jnp.int32))
            horizon = GumbelHorizon(jnp.asarray(spec.gumbel_horizon, jnp.int32))
        self.gumbel_step, self.gumbel_horizon = nnx.data(step), nnx.data(horizon)
        self.kernel_net = self.kernel.make_group_net(
            self.group.dim, in_features, out_features, rngs=rngs
        )

    @property
    def resamples(self) -> bool:
        """Whether this layer draws its own output elements."""
        return self.sampling.moves

    def temperature(self) -> jax.Array:
        """Current relaxed-Bernoulli temperature of this layer."""
        init, end = self.sampling.gumbel_temperatures
        if self.gumbel_step is None:  # no relaxed Bernoulli in this layer
            return jnp.asarray(init, jnp.float32)
        return gumbel_temperature(self.gumbel_step[...], self.gumbel_horizon[...], init, end)

    def sample(self, key: jax.Array | None, num_samples: int = 1):
        """Draws this layer's output elements: ``(elements [S, N, d], mask [S, N])``.

        Outside ``jit``, a NaN / inf distribution parameter raises ``ValueError``.
        """
        params = distribution_values(self)
        for name, value in params.items():
            _check_finite_param("GroupConv", name, value)
        return self.group.sample(
            key,
            self.num_elements,
            num_samples=num_samples,
            sampling=self.sampling.method,
            partial=self.partial,
            params=params,
            temperature=self.temperature(),
        )

    def _active_slots(self, elements: jax.Array, mask: jax.Array):
        """The first ``active_elements`` slots of a sample (all of them when masked)."""
        a = self.active_elements
        if a is None or a >= mask.shape[1]:
            return elements, mask
        overflow = jnp.any(mask[:, a:] > 0)
        if not isinstance(overflow, jax.core.Tracer):
            if bool(overflow):
                valid = int(jnp.max(jnp.sum(mask > 0, axis=-1)))
                raise ValueError(
                    f"GroupConv(active_elements={a}) sampled {valid} valid elements: its "
                    "adaptive size is stale (call pgcnn_jax.nn.update_adaptive(model) after "
                    "every parameter update)"
                )
            return elements[:, :a], mask[:, :a]
        elements, mask = elements[:, :a], mask[:, :a]
        # Under jit a stale size cannot raise: poison the outputs rather than drop slots.
        return elements, jnp.where(overflow, jnp.nan, mask)

    def _check_input(self, h: GroupFeatures) -> None:
        if not isinstance(h, GroupFeatures):
            raise ValueError(f"GroupConv expects GroupFeatures, got {type(h).__name__}")
        v = h.values
        if v.ndim != 5 or v.shape[-1] != self.in_features:
            raise ValueError(
                f"GroupConv expects values [B, H, W, N, {self.in_features}], got shape {v.shape}"
            )
        if h.elements.shape[1] != v.shape[3] or h.elements.shape[-1] != self.group.dim:
            raise ValueError(
                f"elements of shape {h.elements.shape} do not match values {v.shape} for group "
                f"{self.group.name!r} (d = {self.group.dim})"
            )

    def __call__(self, h: GroupFeatures, *, rngs: nnx.Rngs | None = None) -> GroupFeatures:
        self._check_input(h)
        v = h.values
        if self.resamples:
            method = self.sampling.method
            needs_key = self.group.needs_key(self.num_elements, method, self.partial)
            key = sample_key(rngs, "GroupConv") if needs_key else None
            g_out, mask_out = self._active_slots(*self.sample(key, self._num_samples(v.shape[0])))
        else:
            if h.elements.shape[1] != self.num_elements:
                raise ValueError(
                    f"GroupConv(num_elements={self.num_elements}) reuses its input elements but "
                    f"got {h.elements.shape[1]}; set sample_per_layer=True or match the sizes"
                )
            g_out, mask_out = h.elements, h.mask
        bias = None if self.bias is None else self.bias[...]
        x = v.reshape(*v.shape[:3], -1)
        sizes = (self.kernel_size, self.in_features, self.out_features)
        y = self._group_conv(x, g_out, h.elements, mask_out, h.mask, sizes, self.padding, bias)
        return self._output(y, g_out, mask_out, bias, mask_values=True)


class PointwiseGroupConv(_GroupConvBase):
    """1x1 group convolution mapping features on ``g_in`` onto given elements ``g_out``
    (REFERENCE 3.3: the residual shortcut). No bias, never partial, kernel-net input is the
    normalised ``u^{-1} v`` only. Rendered jointly (there is no spatial factor): a ``kernel``
    spec with ``render="separable"`` raises ``ValueError``; the default spec has
    ``hidden=16``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        group: Group | str,
        kernel: KernelSpec | str = KernelSpec(hidden=16),
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.kernel = joint_spec(kernel, "PointwiseGroupConv")
        self.group = get_group(group)
        self.in_features, self.out_features = in_features, out_features
        self.precision = check_precision(precision)
        self.kernel_norm = KernelNorm(jnp.zeros(()))
        self.kernel_net = self.kernel.make_net(
            self.group.dim, out_features * in_features, rngs=rngs
        )

    def __call__(self, h: GroupFeatures, g_out: jax.Array, mask_out: jax.Array) -> GroupFeatures:
        v = h.values
        if v.ndim != 5 or v.shape[-1] != self.in_features:
            raise ValueError(
                f"PointwiseGroupConv expects values [B, H, W, N, {self.in_features}], "
                f"got shape {v.shape}"
            )
        x = v.reshape(*v.shape[:3], -1)
        sizes = (0, self.in_features, self.out_features)
        y = self._group_conv(x, g_out, h.elements, mask_out, h.mask, sizes, "valid", None)
        y = y.reshape(*y.shape[:3], g_out.shape[1], self.out_features)
        return GroupFeatures(y * broadcast_mask(mask_out), g_out, mask_out)
