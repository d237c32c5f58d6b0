"""One frozen description of a conv's continuous kernel: the net, its settings, the renderer."""

from __future__ import annotations

import dataclasses
import math
import numbers

from flax import nnx

from pgcnn_jax.kernels._mfn import MFN_KINDS, FourierNet, GaborNet, MAGNet
from pgcnn_jax.kernels._nets import SIREN, MLPKernel

__all__ = [
    "FACTOR_INITS",
    "KERNEL_NAMES",
    "RENDERS",
    "KernelSpec",
    "SeparableKernelNet",
    "as_kernel_spec",
]

KERNEL_NAMES = (
    "siren",
    "mlp_relu",
    "mlp_leaky_relu",
    "mlp_swish",
    "fourier",
    "gabor",
    "magnet",
)

#: How a group convolution renders its kernel from the spec's net(s):
#: ``"joint"``: one net on ``[A(u)^-1 p, u^-1 v]`` (REFERENCE 3.2), a dense
#: ``[k, k, N_in C_in, N_out C_out]`` kernel; ``"separable"``: ``psi_S(A(u)^-1 p)[o] *
#: psi_G(u^-1 v)[o, c]`` (Knigge, Romero & Bekkers, ICML 2022), a 1x1 group mixing followed by
#: a depthwise spatial conv (:func:`pgcnn_jax.nn.render_group_conv`).
RENDERS = ("joint", "separable")

#: How the two nets of a separable kernel are initialised (:attr:`KernelSpec.factor_init`):
#: ``"matched"`` (default): each factor's first layer draws its weights with the fan-in of the
#: joint net's input size ``2 + d`` (SIREN: ``U(+-1/(2 + d))``; MFN filters:
#: ``U(+-1/sqrt(2 + d))``), so that each keeps the joint net's frequency spectrum on its own
#: coordinates; a SIREN factor's first-layer biases are drawn as the contribution of the
#: joint net's inputs it does not see (``w x``, ``x ~ U(-1, 1)``: the joint net's phases; with
#: zero biases ``psi_G`` is odd in the angle, all its energy varying with it, where 27-45 %
#: of the joint net's energy at a tap is constant along the angle); and the spatial factor
#: ``psi_S`` has unit scale at initialisation (SIREN: output bound times ``omega_0``; MFN:
#: output rescaled to unit root mean square on a grid), so that ``psi_S psi_G`` has the joint
#: kernel's scale. ``"plain"``: each net initialised as a stand-alone net over its own inputs
#: (before issue 14: ``psi_G`` over one angle is about 3.5x rougher than the joint net along
#: it). MLP kernels (``mlp_*``) are initialised the same either way.
FACTOR_INITS = ("matched", "plain")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"KernelSpec.{name} must be a positive int, got {value!r}")


def _positive_float(name: str, value) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"KernelSpec.{name} must be a finite number > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A continuous kernel: which net, its settings and how a group conv renders it.

    Frozen and hashable (a static part of a layer). Convs take it as ``kernel=`` (a plain
    string ``s`` means ``KernelSpec(net=s)``).

    Attributes:
      net: kernel-net type, one of :data:`KERNEL_NAMES`.
      hidden: hidden width ``H`` of the net(s).
      layers: layers of the net (SIREN / MLP: linear maps, ``>= 2``; MFN: hidden linears
        ``L >= 1``).
      omega_0: SIREN frequency (SIREN only).
      mfn_input_scale: MFN filter frequency scale, divided by ``sqrt(L + 1)`` (``fourier``,
        ``gabor``, ``magnet``; 256 in the reference).
      mfn_alpha: Gamma shape numerator of the Gabor / MAGNet envelopes (6 in the reference).
      mfn_beta: Gamma rate of the Gabor / MAGNet envelopes (1 in the reference).
      render: one of :data:`RENDERS`; only :class:`~pgcnn_jax.nn.GroupConv` renders
        ``"separable"``.
      spatial_hidden: hidden width of the separable spatial net ``psi_S`` (``None``:
        ``hidden``); only used by ``render="separable"``.
      factor_init: initialisation of the separable factors, one of :data:`FACTOR_INITS`;
        only used by ``render="separable"``.

    Example:
      >>> from pgcnn_jax.kernels import KernelSpec
      >>> spec = KernelSpec("gabor", hidden=16, mfn_alpha=3.0)
      >>> spec.replace(render="separable").render
      'separable'
    """

    net: str = "siren"
    hidden: int = 32
    layers: int = 3
    omega_0: float = 10.0
    mfn_input_scale: float = 256.0
    mfn_alpha: float = 6.0
    mfn_beta: float = 1.0
    render: str = "joint"
    spatial_hidden: int | None = None
    factor_init: str = "matched"

    def __post_init__(self):
        if self.net not in KERNEL_NAMES:
            raise ValueError(f"unknown kernel net {self.net!r}; expected one of {KERNEL_NAMES}")
        _positive_int("hidden", self.hidden)
        _positive_int("layers", self.layers)
        if self.net not in MFN_KINDS and self.layers < 2:
            raise ValueError(f"a {self.net!r} kernel net needs layers >= 2, got {self.layers}")
        _positive_float("omega_0", self.omega_0)
        _positive_float("mfn_input_scale", self.mfn_input_scale)
        _positive_float("mfn_alpha", self.mfn_alpha)
        _positive_float("mfn_beta", self.mfn_beta)
        if self.render not in RENDERS:
            raise ValueError(f"unknown kernel render {self.render!r}; expected one of {RENDERS}")
        if self.spatial_hidden is not None:
            _positive_int("spatial_hidden", self.spatial_hidden)
        if self.factor_init not in FACTOR_INITS:
            raise ValueError(
                f"unknown factor_init {self.factor_init!r}; expected one of {FACTOR_INITS}"
            )

    def replace(self, **changes) -> KernelSpec:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def separable(self) -> bool:
        return self.render == "separable"

    def make_net(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int | None = None,
        first_fan_in: int | None = None,
        unit_output: bool = False,
        absent_inputs: int = 0,
        rngs: nnx.Rngs,
    ) -> nnx.Module:
        """One net of type :attr:`net`, ``[..., in_features] -> [..., out_features]``, with
        this spec's settings (``hidden`` overrides :attr:`hidden`).

        ``first_fan_in`` (SIREN and MFN nets) replaces ``in_features`` as the fan-in of the
        first layer's weight bound; ``unit_output`` (SIREN and MFN nets) initialises the
        output at unit scale; ``absent_inputs`` (SIREN) draws the first layer's biases as the
        contribution of that many inputs of the joint net that this net does not see. They
        serve the separable factors (:data:`FACTOR_INITS`); an MLP kernel takes none
        (``ValueError``), MFN nets no ``absent_inputs`` (their filters already draw random
        phases)."""
        hidden = self.hidden if hidden is None else hidden
        kw = dict(hidden=hidden, num_layers=self.layers, rngs=rngs)
        if self.net.startswith("mlp_"):
            if first_fan_in is not None or unit_output or absent_inputs:
                raise ValueError(
                    f"a {self.net!r} kernel net takes no first_fan_in / unit_output / absent_inputs"
                )
            return MLPKernel(in_features, out_features, activation=self.net[4:], **kw)
        if self.net == "siren":
            gain = self.omega_0 if unit_output else 1.0
            return SIREN(
                in_features,
                out_features,
                omega_0=self.omega_0,
                first_fan_in=first_fan_in,
                first_bias_inputs=absent_inputs,
                output_gain=gain,
                **kw,
            )
        if absent_inputs:
            raise ValueError(f"a {self.net!r} kernel net takes no absent_inputs")
        kw |= dict(
            input_scale=self.mfn_input_scale, first_fan_in=first_fan_in, unit_output=unit_output
        )
        if self.net == "fourier":
            return FourierNet(in_features, out_features, **kw)
        cls = GaborNet if self.net == "gabor" else MAGNet
        return cls(in_features, out_features, alpha=self.mfn_alpha, beta=self.mfn_beta, **kw)

    def make_group_net(
        self, group_dim: int, in_features: int, out_features: int, *, rngs: nnx.Rngs
    ) -> nnx.Module:
        """The kernel net(s) of a group conv with ``d = group_dim``: ``render="joint"``: one
        net ``R^(2 + d) -> R^(C_out C_in)``; ``"separable"``: a :class:`SeparableKernelNet`
        (``psi_S: R^2 -> R^C_out`` and ``psi_G: R^d -> R^(C_out C_in)``), initialised as
        :attr:`factor_init` says."""
        joint_inputs = 2 + group_dim
        if self.render == "joint":
            return self.make_net(joint_inputs, out_features * in_features, rngs=rngs)
        matched = self.factor_init == "matched" and not self.net.startswith("mlp_")
        fan_in = joint_inputs if matched else None
        siren = matched and self.net == "siren"
        return SeparableKernelNet(
            spatial=self.make_net(
                2,
                out_features,
                hidden=self.spatial_hidden,
                first_fan_in=fan_in,
                unit_output=matched,
                absent_inputs=group_dim if siren else 0,
                rngs=rngs,
            ),
            group=self.make_net(
                group_dim,
                out_features * in_features,
                first_fan_in=fan_in,
                absent_inputs=2 if siren else 0,
                rngs=rngs,
            ),
        )


class SeparableKernelNet(nnx.Module):
    """The two nets of a separable kernel: ``spatial`` (``psi_S``, positions ``[..., 2] ->
    [..., C_out]``) and ``group`` (``psi_G``, normalised relative elements ``[..., d] ->
    [..., C_out C_in]``)."""

    def __init__(self, *, spatial: nnx.Module, group: nnx.Module):
        self.spatial = spatial
        self.group = group

    @property
    def reduces_over_points(self) -> bool:
        """Whether either net's output at one point depends on the other points (BatchNorm)."""
        return any(getattr(n, "reduces_over_points", False) for n in (self.spatial, self.group))


def as_kernel_spec(kernel: KernelSpec | str) -> KernelSpec:
    """``kernel`` itself, or ``KernelSpec(net=kernel)`` for a string; ``ValueError`` else."""
    if isinstance(kernel, KernelSpec):
        return kernel
    if isinstance(kernel, str):
        return KernelSpec(net=kernel)
    raise ValueError(f"kernel must be a KernelSpec or a kernel-net name, got {kernel!r}")
