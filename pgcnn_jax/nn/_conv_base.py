"""What the convs share: argument checks, the kernel-norm record, per-example chunking and the
output tail (bias, feature recording)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.groups import Group, get_group
from pgcnn_jax.kernels import KernelSpec, as_kernel_spec, check_kernel_size
from pgcnn_jax.nn._features import GroupFeatures, broadcast_mask
from pgcnn_jax.nn._functional import check_precision, conv2d_per_example
from pgcnn_jax.nn._render import render_group_conv
from pgcnn_jax.nn._sampling import PER_EXAMPLE_RENDERS, SamplingSpec
from pgcnn_jax.nn._variables import KernelNorm

PADDINGS = ("same", "valid")


def safe_sqrt(sq: jax.Array) -> jax.Array:
    """``sqrt(sq)`` with gradient 0 (not NaN) at ``sq = 0``."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def safe_norm(x: jax.Array) -> jax.Array:
    """Frobenius norm with gradient 0 (not NaN) at ``x = 0``, like ``torch.norm``."""
    return safe_sqrt(jnp.sum(jnp.square(x)))


def sample_key(rngs: nnx.Rngs | None, layer: str) -> jax.Array:
    if rngs is None:
        raise ValueError(f"{layer} samples group elements: call it with rngs=nnx.Rngs(sample=...)")
    return rngs.sample()


def float_images(x: jax.Array, layer: str) -> jax.Array:
    """Integer / boolean images cast to float32 (values unchanged, e.g. uint8 stays 0..255);
    ``ValueError`` for other non-float dtypes."""
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        return x.astype(jnp.float32)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{layer} expects real images, got dtype {x.dtype}")
    return x


def joint_spec(kernel: KernelSpec | str, layer: str) -> KernelSpec:
    """The spec of a layer that renders jointly only; ``ValueError`` for a separable one."""
    spec = as_kernel_spec(kernel)
    if spec.render != "joint":
        raise ValueError(
            f"{layer} renders its kernel jointly only, got kernel render {spec.render!r}; pass "
            "kernel=spec.replace(render='joint')"
        )
    return spec


def group_conv_spec(kernel: KernelSpec | str, separable: bool | None) -> KernelSpec:
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


class _ConvBase(nnx.Module):
    #: class default of the per-example rendering (:data:`PER_EXAMPLE_RENDERS`) of layers
    #: without a :class:`SamplingSpec` (the pointwise shortcut); set the attribute on a layer
    #: to change it (static: part of the graphdef).
    per_example_render: str = "chunked"

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

    def _record_norm(self, sq: jax.Array, bias: jax.Array | None) -> None:
        """Records the kernel norm from the kernel's squared norm ``sq``. A variable created at
        construction and overwritten per call keeps the graph static (no retracing), unlike
        ``sow``."""
        norm = safe_sqrt(sq)
        self.kernel_norm[...] = norm if bias is None else norm + safe_norm(bias)

    def _conv_per_example(self, x, render, operands, padding, bias):
        """:func:`conv2d_per_example` and the kernel norm of all ``B`` kernels."""
        y, sq = conv2d_per_example(x, render, operands, padding, precision=self.precision)
        self._record_norm(sq, bias)
        return y


class _SampledConvBase(_ConvBase):
    """A conv that samples its group (lifting and group convs): the shared constructor part,
    the :class:`SamplingSpec` and the output tail."""

    def _setup(
        self,
        in_features: int,
        out_features: int,
        group: Group | str,
        num_elements: int,
        kernel_size: int,
        sampling: SamplingSpec,
        padding: str,
        use_bias: bool,
        precision: str | None,
    ) -> None:
        self.group = get_group(group)
        self.group.check_num_elements(num_elements)
        check_kernel_size(kernel_size)
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        self.num_elements, self.kernel_size = num_elements, kernel_size
        #: the layer's :class:`SamplingSpec` (static)
        self.sampling = sampling
        self.padding = padding
        self.precision = check_precision(precision)
        self.kernel_norm = KernelNorm(jnp.zeros(()))
        self.bias = nnx.data(nnx.Param(jnp.zeros((out_features,))) if use_bias else None)

    @property
    def per_example_render(self) -> str:
        """``sampling.per_example_render``; assigning replaces the spec's field."""
        return self.sampling.per_example_render

    @per_example_render.setter
    def per_example_render(self, value: str) -> None:
        self.sampling = self.sampling.replace(per_example_render=value)

    def _num_samples(self, batch: int) -> int:
        """``S``: the batch size with per-example sampling, else 1."""
        return batch if self.sampling.per_example else 1

    def _output(self, y, elements, mask, bias, mask_values: bool) -> GroupFeatures:
        """``[B, H, W, N C_out]`` conv output -> :class:`GroupFeatures` with the bias added
        (masked invalid slots with ``mask_values``), recorded under ``record_as`` when set
        (:func:`pgcnn_jax.analysis.record_features`)."""
        y = y.reshape(*y.shape[:3], elements.shape[1], self.out_features)
        if bias is not None:
            y = y + bias.reshape(1, 1, 1, 1, -1)
        if mask_values:
            y = y * broadcast_mask(mask)
        out = GroupFeatures(y, elements, mask)
        if (name := getattr(self, "record_as", None)) is not None:
            self.sow(nnx.Intermediate, "features", {name: out})
        return out


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
        self._record_norm(sq, bias)
        return y
