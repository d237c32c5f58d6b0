"""Lifting, (partial) group and pointwise group convolutions as NNX modules (REFERENCE 3)."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.groups import SAMPLING_METHODS, Group, get_group, gumbel_temperature
from pgcnn_jax.kernels import KernelSpec, as_kernel_spec, check_kernel_size
from pgcnn_jax.nn._features import GroupFeatures, broadcast_mask
from pgcnn_jax.nn._functional import (
    check_precision,
    conv2d,
    conv2d_per_example,
    lifting_kernel,
)
from pgcnn_jax.nn._render import render_group_conv
from pgcnn_jax.nn._variables import DistributionParam, GumbelHorizon, GumbelStep, KernelNorm

PADDINGS = ("same", "valid")
#: How a conv with per-example elements (``S = B``) renders its ``B`` kernels:
#: ``"chunked"`` (default) renders and convolves a few examples at a time
#: (:func:`~pgcnn_jax.nn.conv2d_per_example`), ``"batched"`` renders all ``B`` kernels first
#: (``B`` full kernels in memory; also used by kernel nets with BatchNorm, whose statistics span
#: every example's kernel).
PER_EXAMPLE_RENDERS = ("chunked", "batched")


def _check_common(group, num_elements, kernel_size, sampling, padding, in_f, out_f):
    group = get_group(group)
    group.check_num_elements(num_elements)
    check_kernel_size(kernel_size)
    if sampling not in SAMPLING_METHODS:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLING_METHODS}")
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")
    for name, v in (("in_features", in_f), ("out_features", out_f)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return group


def _sample_key(rngs: nnx.Rngs | None, layer: str) -> jax.Array:
    if rngs is None:
        raise ValueError(f"{layer} samples group elements: call it with rngs=nnx.Rngs(sample=...)")
    return rngs.sample()


def _check_finite_param(layer: str, name: str, value: jax.Array) -> None:
    """``ValueError`` when a concrete (not traced) distribution parameter holds NaN / inf: its
    sampler would silently yield no elements (NaN) or NaN elements (inf). Under ``jit`` the
    values are tracers and the training loop checks them instead."""
    if isinstance(value, jax.core.Tracer):
        return
    if not bool(jnp.all(jnp.isfinite(value))):
        raise ValueError(f"{layer} parameter {name!r} is not finite: {value}")


def _float_images(x: jax.Array, layer: str) -> jax.Array:
    """Integer / boolean images cast to float32 (values unchanged, e.g. uint8 stays 0..255);
    ``ValueError`` for other non-float dtypes."""
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        return x.astype(jnp.float32)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{layer} expects real images, got dtype {x.dtype}")
    return x


def safe_norm(x: jax.Array) -> jax.Array:
    """Frobenius norm with gradient 0 (not NaN) at ``x = 0``, like ``torch.norm``."""
    sq = jnp.sum(jnp.square(x))
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _sqrt_safe(sq: jax.Array) -> jax.Array:
    """``sqrt(sq)`` with gradient 0 (not NaN) at ``sq = 0``."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _kernel_norm(weight: jax.Array, bias: jax.Array | None) -> jax.Array:
    norm = safe_norm(weight)
    return norm if bias is None else norm + safe_norm(bias)


def _joint_spec(kernel: KernelSpec | str, layer: str) -> KernelSpec:
    """The spec of a layer that renders jointly only; ``ValueError`` for a separable one."""
    spec = as_kernel_spec(kernel)
    if spec.render != "joint":
        raise ValueError(
            f"{layer} renders its kernel jointly only, got kernel render {spec.render!r}; pass "
            "kernel=spec.replace(render='joint')"
        )
    return spec


class _ConvBase(nnx.Module):
    #: class default of the per-example rendering (:data:`PER_EXAMPLE_RENDERS`); set the
    #: attribute on a layer to change it (static: part of the graphdef).
    per_example_render: str = "chunked"

    def _record_norm(self, weight, bias):
        # A variable created at construction and overwritten per call keeps the graph static
        # (no retracing), unlike ``sow``.
        self.kernel_norm[...] = _kernel_norm(weight, bias)

    def _chunked(self, batch: int, *num_samples: int) -> bool:
        """Whether to render per-example kernels chunk by chunk (``S = B > 1``)."""
        if self.per_example_render not in PER_EXAMPLE_RENDERS:
            raise ValueError(
                f"unknown per_example_render {self.per_example_render!r}; expected one of "
                f"{PER_EXAMPLE_RENDERS}"
            )
        return (
            batch > 1
            and max(num_samples) == batch
            and self.per_example_render == "chunked"
            and not getattr(self.kernel_net, "reduces_over_points", False)
        )

    def _conv_per_example(self, x, render, operands, padding, bias):
        """:func:`conv2d_per_example` and the kernel norm of all ``B`` kernels."""
        y, sq = conv2d_per_example(x, render, operands, padding, precision=self.precision)
        norm = _sqrt_safe(sq)
        self.kernel_norm[...] = norm if bias is None else norm + safe_norm(bias)
        return y


class _GroupConvBase(_ConvBase):
    def _group_conv(self, x, g_out, g_in, mask_out, mask_in, sizes, padding, bias):
        """Renders the kernel of ``(g_out, g_in)`` with the renderer of ``self.kernel.render``
        (per example in chunks when ``S = B`` and the renderer chunks), convolves
        ``x [B, H, W, N_in C_in]`` with it and records the kernel norm."""
        k, c_in, c_out = sizes
        y, sq = render_group_conv(
            self.kernel.render,
            self.kernel_net,
            self.group,
            x,
            g_out,
            g_in,
            mask_out,
            mask_in,
            kernel_size=k,
            in_features=c_in,
            out_features=c_out,
            padding=padding,
            precision=self.precision,
            chunked=self._chunked(x.shape[0], g_out.shape[0], g_in.shape[0]),
        )
        norm = _sqrt_safe(sq)
        self.kernel_norm[...] = norm if bias is None else norm + safe_norm(bias)
        return y


class LiftingConv(_ConvBase):
    """Lifting convolution ``[B, H, W, C_in] -> GroupFeatures [B, H', W', N, C_out]``.

    Always samples the whole group (REFERENCE 1.6, last paragraph): a regular grid, with one
    fresh random offset per forward (per batch element with ``sample_per_batch_element``) when
    ``sampling="random"``. Integer (e.g. ``uint8``) or boolean images are cast to float32
    with their values unchanged (no rescaling to ``[0, 1]``); complex ones are refused.

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
        sampling: str = "random",
        sample_per_batch_element: bool = False,
        padding: str = "same",
        use_bias: bool = True,
        kernel: KernelSpec | str = "siren",
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.kernel = _joint_spec(kernel, "LiftingConv")
        self.group = _check_common(
            group, num_elements, kernel_size, sampling, padding, in_features, out_features
        )
        if sample_per_batch_element and sampling != "random":
            raise ValueError("sample_per_batch_element=True requires sampling='random'")
        self.in_features, self.out_features = in_features, out_features
        self.num_elements, self.kernel_size = num_elements, kernel_size
        self.sampling, self.padding = sampling, padding
        self.precision = check_precision(precision)
        self.sample_per_batch_element = sample_per_batch_element
        self.kernel_norm = KernelNorm(jnp.zeros(()))
        self.kernel_net = self.kernel.make_net(2, out_features * in_features, rngs=rngs)
        self.bias = nnx.data(nnx.Param(jnp.zeros((out_features,))) if use_bias else None)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> GroupFeatures:
        x = _float_images(jnp.asarray(x), "LiftingConv")
        if x.ndim != 4 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"LiftingConv expects input [B, H, W, {self.in_features}], got shape {x.shape}"
            )
        needs_key = self.group.needs_key(self.num_elements, self.sampling, False)
        key = _sample_key(rngs, "LiftingConv") if needs_key else None
        s = x.shape[0] if self.sample_per_batch_element else 1
        elements, mask = self.group.sample(
            key, self.num_elements, num_samples=s, sampling=self.sampling
        )
        bias = None if self.bias is None else self.bias[...]
        args = (self.kernel_net, self.group)
        sizes = (self.kernel_size, self.in_features, self.out_features)
        if self._chunked(x.shape[0], s):

            def render(e):
                return lifting_kernel(*args, e[None], *sizes)[0]

            y = self._conv_per_example(x, render, (elements,), self.padding, bias)
        else:
            weight = lifting_kernel(*args, elements, *sizes)
            self._record_norm(weight, bias)
            y = conv2d(x, weight, self.padding, precision=self.precision)
        y = y.reshape(*y.shape[:3], self.num_elements, self.out_features)
        if bias is not None:
            y = y + bias.reshape(1, 1, 1, 1, -1)
        out = GroupFeatures(y, elements, mask)
        if (name := getattr(self, "record_as", None)) is not None:  # analysis.record_features
            self.sow(nnx.Intermediate, "features", {name: out})
        return out


class PartialGroupLayer(nnx.Module):
    """Marker base of the layers that can learn a distribution over their group (partial
    equivariance): :func:`partial_layers` finds them with ``nnx.iter_modules``.

    A subclass has ``group``, ``num_elements``, ``sampling``, ``partial`` (whether this
    instance learns its distribution) and :meth:`distribution` (its parameters by name).
    """

    #: distribution-parameter attributes of every group; ``None`` unless the layer's group
    #: and sampling learn them (:meth:`pgcnn_jax.groups.Group.distribution`)
    theta = keep = mirror = scale = None
    distribution_names: tuple[str, ...] = ()

    def distribution(self) -> dict[str, DistributionParam]:
        """The layer's distribution parameters by name (empty for full layers)."""
        return {name: getattr(self, name) for name in self.distribution_names}


def layer_name(path) -> str:
    """The name of the layer at an ``nnx`` graph path: attribute names joined by dots, with
    ``blocks, i`` written ``block{i + 1}`` (``blocks/0/conv1`` -> ``block1.conv1``; the names
    of ``metrics.jsonl`` and ``results.json``)."""
    parts, i = [], 0
    path = tuple(path)
    while i < len(path):
        if path[i] == "blocks" and i + 1 < len(path) and isinstance(path[i + 1], int):
            parts.append(f"block{path[i + 1] + 1}")
            i += 2
        else:
            parts.append(str(path[i]))
            i += 1
    return ".".join(parts)


def partial_layers(model: nnx.Module) -> list[tuple[str, PartialGroupLayer]]:
    """``(name, layer)`` of every :class:`PartialGroupLayer` of ``model`` that learns its
    distribution, in graph order (CKResNet: ``block1.conv1, block1.conv2, ...,
    final_conv``; names by :func:`layer_name`)."""
    return [
        (layer_name(path), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, PartialGroupLayer) and module.partial
    ]


def _group_conv_spec(kernel: KernelSpec | str, separable: bool | None) -> KernelSpec:
    """``kernel`` as a spec, ``separable=True`` switching it to ``render="separable"``;
    ``ValueError`` when ``separable=False`` contradicts a separable spec."""
    spec = as_kernel_spec(kernel)
    if separable is None:
        return spec
    if not isinstance(separable, bool):
        raise ValueError(f"separable must be a bool or None, got {separable!r}")
    if separable:
        return spec.replace(render="separable")
    if spec.render != "joint":
        raise ValueError(f"separable=False contradicts kernel render {spec.render!r}")
    return spec


class GroupConv(PartialGroupLayer, _GroupConvBase):
    """Group convolution on sampled elements, full or partial (REFERENCE 3.2).

    Output elements are freshly sampled when the layer is partial or when
    ``sample_per_layer`` with random sampling; otherwise the input elements are reused.
    A partial layer samples from its learned distribution: ``theta`` (``sampling="random"``,
    uniform on ``[-pi theta, pi theta)``), ``keep`` (``sampling="deterministic"``, one
    straight-through Bernoulli per non-identity grid rotation) and, for groups with mirrors,
    ``mirror`` (straight-through Bernoulli with probability ``sigmoid(2 mirror)``).
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
        sampling: str = "random",
        partial: bool = False,
        sample_per_layer: bool = True,
        sample_per_batch_element: bool = False,
        padding: str = "same",
        use_bias: bool = True,
        kernel: KernelSpec | str = "siren",
        separable: bool | None = None,
        gumbel_horizon: int = 100_000,
        gumbel_temperatures: tuple[float, float] = (0.5, 1e-4),
        precision: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.kernel = _group_conv_spec(kernel, separable)
        self.group = _check_common(
            group, num_elements, kernel_size, sampling, padding, in_features, out_features
        )
        if sample_per_batch_element and sampling != "random":
            raise ValueError("sample_per_batch_element=True requires sampling='random'")
        self.in_features, self.out_features = in_features, out_features
        self.num_elements, self.kernel_size = num_elements, kernel_size
        self.sampling, self.padding, self.partial = sampling, padding, partial
        self.precision = check_precision(precision)
        self.sample_per_layer = sample_per_layer
        self.sample_per_batch_element = sample_per_batch_element
        if isinstance(gumbel_horizon, bool) or not isinstance(gumbel_horizon, numbers.Integral):
            raise ValueError(f"gumbel_horizon must be an int, got {gumbel_horizon!r}")
        if gumbel_horizon < 1:
            raise ValueError(f"gumbel_horizon must be >= 1, got {gumbel_horizon}")
        self.gumbel_temperatures = tuple(gumbel_temperatures)
        # Train / eval flag (``model.train()`` / ``model.eval()``); sampling is the same in both
        # modes (REFERENCE 1.8) and the Gumbel step only moves with optimiser steps.
        self.deterministic = False
        # Adaptive execution (DESIGN 4): a static slot count, part of the graphdef.
        self.active_elements: int | None = None
        specs = ()
        if partial:
            self.group.check_partial(num_elements, sampling)
            specs = self.group.distribution(num_elements, sampling)
        #: names of the layer's distribution parameters (the group's
        #: :meth:`~pgcnn_jax.groups.Group.distribution`), static
        self.distribution_names = tuple(spec.name for spec in specs)
        for spec in specs:
            setattr(self, spec.name, nnx.data(DistributionParam(spec.initial_value())))
        step = horizon = None
        if any(spec.relaxed for spec in specs):
            step = GumbelStep(jnp.zeros((), jnp.int32))
            horizon = GumbelHorizon(jnp.asarray(gumbel_horizon, jnp.int32))
        self.gumbel_step, self.gumbel_horizon = nnx.data(step), nnx.data(horizon)
        self.kernel_norm = KernelNorm(jnp.zeros(()))
        self.kernel_net = self.kernel.make_group_net(
            self.group.dim, in_features, out_features, rngs=rngs
        )
        self.bias = nnx.data(nnx.Param(jnp.zeros((out_features,))) if use_bias else None)

    @property
    def resamples(self) -> bool:
        """Whether this layer draws its own output elements."""
        return self.partial or (self.sample_per_layer and self.sampling == "random")

    def temperature(self) -> jax.Array:
        """Current relaxed-Bernoulli temperature of this layer."""
        init, end = self.gumbel_temperatures
        if self.gumbel_step is None:  # no relaxed Bernoulli in this layer
            return jnp.asarray(init, jnp.float32)
        return gumbel_temperature(self.gumbel_step[...], self.gumbel_horizon[...], init, end)

    def sample(self, key: jax.Array | None, num_samples: int = 1):
        """Draws this layer's output elements: ``(elements [S, N, d], mask [S, N])``.

        Outside ``jit``, a NaN / inf ``theta``, ``mirror`` or ``keep`` raises ``ValueError``.
        """
        params = {name: param[...] for name, param in self.distribution().items()}
        for name, value in params.items():
            _check_finite_param("GroupConv", name, value)
        return self.group.sample(
            key,
            self.num_elements,
            num_samples=num_samples,
            sampling=self.sampling,
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

    def __call__(self, h: GroupFeatures, *, rngs: nnx.Rngs | None = None) -> GroupFeatures:
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
        if self.resamples:
            needs_key = self.group.needs_key(self.num_elements, self.sampling, self.partial)
            key = _sample_key(rngs, "GroupConv") if needs_key else None
            s = v.shape[0] if self.sample_per_batch_element else 1
            g_out, mask_out = self._active_slots(*self.sample(key, s))
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
        y = y.reshape(*y.shape[:3], g_out.shape[1], self.out_features)
        if bias is not None:
            y = y + bias.reshape(1, 1, 1, 1, -1)
        out = GroupFeatures(y * broadcast_mask(mask_out), g_out, mask_out)
        if (name := getattr(self, "record_as", None)) is not None:  # analysis.record_features
            self.sow(nnx.Intermediate, "features", {name: out})
        return out


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
        self.kernel = _joint_spec(kernel, "PointwiseGroupConv")
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
