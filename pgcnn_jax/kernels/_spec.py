"""One frozen description of a conv's continuous kernel: the net, its settings, the renderer."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

from flax import nnx

from pgcnn_jax.kernels._registry import FactorInit, kernel_net_entry

__all__ = ["FACTOR_INITS", "RENDERS", "KernelSpec", "SeparableKernelNet", "as_kernel_spec"]

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


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A continuous kernel: which net, its settings and how a group conv renders it.

    Frozen and hashable (a static part of a layer). Convs take it as ``kernel=`` (a plain
    string ``s`` means ``KernelSpec(net=s)``); :class:`~pgcnn_jax.models.ModelConfig` holds one
    as ``kernel`` (nested in ``config.json``: :meth:`to_dict`, :meth:`from_dict`).

    Attributes:
      net: a registered kernel net (:data:`~pgcnn_jax.kernels.KERNEL_NAMES`, or one added by
        :func:`~pgcnn_jax.kernels.register_kernel_net`).
      hidden: hidden width ``H`` of the net(s).
      layers: layers of the net (SIREN / MLP: linear maps, ``>= 2``; MFN: hidden linears
        ``L >= 1``).
      options: the net's own settings, a value of the options class it was registered with
        (``siren``: :class:`SirenOptions`, ``omega_0``; ``fourier``: :class:`MFNOptions`,
        ``input_scale``; ``gabor`` / ``magnet``: :class:`GaborOptions`, ``input_scale``,
        ``alpha``, ``beta``; ``mlp_*``: none). ``None`` (default) means the net's defaults and
        a mapping those settings; either is stored as the options value.
      render: one of :data:`RENDERS`; only :class:`~pgcnn_jax.nn.GroupConv` renders
        ``"separable"``.
      spatial_hidden: hidden width of the separable spatial net ``psi_S`` (``None``:
        ``hidden``); only used by ``render="separable"``.
      factor_init: initialisation of the separable factors, one of :data:`FACTOR_INITS`;
        only used by ``render="separable"``.

    Example:
      >>> from pgcnn_jax.kernels import KernelSpec
      >>> spec = KernelSpec("gabor", hidden=16, options={"alpha": 3.0})
      >>> spec.options.alpha, spec.replace(net="siren").options
      (3.0, SirenOptions(omega_0=10.0))
      >>> spec.replace(beta=2.0, render="separable").options.beta
      2.0
    """

    net: str = "siren"
    hidden: int = 32
    layers: int = 3
    options: Any = None
    render: str = "joint"
    spatial_hidden: int | None = None
    factor_init: str = "matched"

    def __post_init__(self):
        entry = kernel_net_entry(self.net)
        _positive_int("hidden", self.hidden)
        _positive_int("layers", self.layers)
        if self.layers < entry.min_layers:
            raise ValueError(
                f"a {self.net!r} kernel net needs layers >= {entry.min_layers}, got {self.layers}"
            )
        object.__setattr__(self, "options", entry.make_options(self.options))
        if self.render not in RENDERS:
            raise ValueError(f"unknown kernel render {self.render!r}; expected one of {RENDERS}")
        if self.spatial_hidden is not None:
            _positive_int("spatial_hidden", self.spatial_hidden)
        if self.factor_init not in FACTOR_INITS:
            raise ValueError(
                f"unknown factor_init {self.factor_init!r}; expected one of {FACTOR_INITS}"
            )

    def replace(self, **changes) -> KernelSpec:
        """A copy with ``changes`` (validated again): fields, or settings of the net's options
        (``spec.replace(omega_0=30.0)``). A new ``net`` starts from its default options
        unless ``options`` is given; settings the (new) net lacks raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(self)}
        settings = {k: changes.pop(k) for k in list(changes) if k not in names}
        if "options" not in changes and changes.get("net", self.net) != self.net:
            changes["options"] = None
        spec = dataclasses.replace(self, **changes)
        if not settings:
            return spec
        return dataclasses.replace(spec, options=dataclasses.asdict(spec.options) | settings)

    @property
    def separable(self) -> bool:
        return self.render == "separable"

    @property
    def reduces_over_points(self) -> bool:
        """Whether the net's output at one point depends on the other points rendered with it
        (BatchNorm over the points, ``mlp_*``)."""
        return kernel_net_entry(self.net).reduces_over_points

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the options as a dict); inverse of :meth:`from_dict`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"options": dataclasses.asdict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KernelSpec:
        """The spec of a :meth:`to_dict` dict; ``ValueError`` naming unknown keys."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a KernelSpec dict is needed, got {d!r}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown kernel spec key(s) {unknown}")
        return cls(**d)

    def make_net(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int | None = None,
        factor: FactorInit | None = None,
        rngs: nnx.Rngs,
    ) -> nnx.Module:
        """One net of type :attr:`net`, ``[..., in_features] -> [..., out_features]``, with
        this spec's settings (``hidden`` overrides :attr:`hidden`); ``factor``: initialise it
        as a matched factor of a separable kernel (see
        :class:`~pgcnn_jax.kernels.FactorInit`; each net takes what applies to it)."""
        return kernel_net_entry(self.net).factory(
            in_features,
            out_features,
            hidden=self.hidden if hidden is None else hidden,
            layers=self.layers,
            options=self.options,
            factor=factor,
            rngs=rngs,
        )

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
        matched = self.factor_init == "matched"
        spatial = FactorInit(joint_inputs, absent_inputs=group_dim, unit_output=True)
        group = FactorInit(joint_inputs, absent_inputs=2, unit_output=False)
        return SeparableKernelNet(
            spatial=self.make_net(
                2,
                out_features,
                hidden=self.spatial_hidden,
                factor=spatial if matched else None,
                rngs=rngs,
            ),
            group=self.make_net(
                group_dim, out_features * in_features, factor=group if matched else None, rngs=rngs
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
