"""Frozen, validated model configuration (DESIGN 7)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from pgcnn_jax.groups import SAMPLING_METHODS, Group, get_group
from pgcnn_jax.kernels import KernelSpec, as_kernel_spec, check_kernel_size
from pgcnn_jax.nn import check_precision

MODEL_NAMES = ("ckresnet", "gcnn", "augerino_ckresnet", "augerino_gcnn")
HEADS = ("pool", "t2", "mlp")
NORMS = ("batch", "layer")
EXECUTIONS = ("masked", "adaptive")


#: The flat names of kernel settings (``ModelConfig`` fields and ``config.json`` keys before
#: issue 15, and the CLIs' ``--set`` keys) and the :class:`~pgcnn_jax.kernels.KernelSpec`
#: field or net setting each stands for; ``separable`` is the render (a bool).
FLAT_KERNEL_KEYS = {
    "kernel_hidden": "hidden",
    "kernel_layers": "layers",
    "omega_0": "omega_0",
    "mfn_input_scale": "input_scale",
    "mfn_alpha": "alpha",
    "mfn_beta": "beta",
    "separable": "render",
    "separable_init": "factor_init",
}


def flat_kernel_spec(spec: KernelSpec | str | Mapping, flat: Mapping[str, Any]) -> KernelSpec:
    """``spec`` (a spec, a net name or a :meth:`KernelSpec.to_dict` dict, e.g. from
    ``--set=kernel={...}``) with the settings ``flat`` by their flat names
    (:data:`FLAT_KERNEL_KEYS`, and ``net``); a new net first (starting from its default
    options). ``ValueError`` for a setting the net lacks or a non-bool ``separable``."""
    changes = {FLAT_KERNEL_KEYS.get(k, k): v for k, v in flat.items()}
    if "render" in changes:
        if not isinstance(changes["render"], bool):
            raise ValueError(f"separable must be a bool, got {changes['render']!r}")
        changes["render"] = "separable" if changes["render"] else "joint"
    spec = KernelSpec.from_dict(spec) if isinstance(spec, Mapping) else as_kernel_spec(spec)
    if "net" in changes:
        spec = spec.replace(net=changes.pop("net"))
    return spec.replace(**changes)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model (REFERENCE 4, 7).

    Attributes:
      model: one of :data:`MODEL_NAMES`.
      group: a registered group name (:data:`pgcnn_jax.groups.GROUP_NAMES`: ``"se2"``,
        ``"e2"``, ``"t2"``, ``"mirror"``, ``"sim2"``).
      group_options: settings of groups that take them, as ``(name, value)`` pairs (a dict is
        accepted and stored as sorted pairs), passed to
        ``get_group(group, **dict(group_options))``; e.g. ``group="sim2", num_elements=8,
        group_options=(("num_scales", 2), ("scale_base", 2.0))``. Every conv of the model
        gets this group value (:meth:`make_group`).
      num_elements: ``N``, sampled elements per layer.
      partial: learn a distribution per group conv (partial G-CNN).
      sampling: ``"random"`` or ``"deterministic"``.
      sample_per_layer: every group conv draws its own output elements (random sampling).
      sample_per_batch_element: ``S = B`` independent element sets.
      kernel: the :class:`~pgcnn_jax.kernels.KernelSpec` of the group convs: the net (a name
        of :data:`pgcnn_jax.kernels.KERNEL_NAMES`), its hidden width ``H`` (the shortcuts use
        ``H // 2``) and layers, the net's own options (SIREN ``omega_0``, MFN ``input_scale``,
        ``alpha``, ``beta``), the render (``"separable"``: ``psi_S(A(u)^-1 p) psi_G(u^-1 v)``,
        a 1x1 group mixing then a depthwise spatial conv; the lifting conv, the shortcuts and
        the T(2) head stay joint) and the separable factors' initialisation. A net name
        ``s`` is accepted for ``KernelSpec(s)``. The constructor and :meth:`replace` also
        take the flat names of these settings used before they were nested
        (:data:`FLAT_KERNEL_KEYS`: ``kernel_hidden``, ``omega_0``, ``mfn_alpha``,
        ``separable``, ...; the ``--set`` keys of the CLIs) as init-only arguments folded into
        ``kernel``; they are no fields (reading one raises ``AttributeError``), except that
        ``separable`` reads ``kernel.render == "separable"``.
      kernel_size: odd spatial size of the rendered kernels.
      width: ``net.no_hidden``, the base channel count ``C``.
      num_blocks: residual blocks (CKResNet) / group-conv blocks (GCNN).
      block_width_factors: (factor, count) pairs flattened, e.g. ``(1, 1, 2, 1)``.
      pool_blocks: indices after which to max-pool (0 = after the stem).
      norm: ``"batch"`` (BatchNorm3d) or ``"layer"`` (GroupNorm with one group).
      dropout: dropout rate (element-wise in CKResNet blocks, channel-wise in GCNN).
      dropout_blocks: GCNN blocks followed by channel dropout.
      head: ``"pool"`` (global max / mean), ``"t2"`` (T(2) last conv), ``"mlp"`` (learnable
        pooling over ``[N, h, w]``).
      final_spatial_dim: ``(h, w)`` of the final map, for ``head="mlp"``.
      gumbel_horizon: relaxed-Bernoulli temperature horizon (training steps) the partial
        layers start with (:class:`~pgcnn_jax.train.TrainConfig` sets it to ``epochs`` times
        the steps per epoch). The layers hold it as traced state
        (:class:`~pgcnn_jax.nn.GumbelHorizon`), so it is left out of ``==`` and ``hash``:
        models whose configs differ only here share compiled steps.
      precision: precision of every convolution (:data:`pgcnn_jax.nn.CONV_PRECISIONS`):
        ``None`` (``lax``'s default, as before the setting existed), ``"float32"``, ``"tf32"``
        or ``"bfloat16"`` (bfloat16 operands, float32 accumulation and output).
      execution: how partial layers run (DESIGN 4): ``"masked"`` (``N`` slots, the first
        ``N'`` valid) or ``"adaptive"`` (layers with a learned ``theta`` run on exactly ``N'``
        slots; :func:`~pgcnn_jax.models.build_model` sets the sizes of the initial thetas and a
        training loop keeps them current with :func:`pgcnn_jax.nn.update_adaptive`). Both give
        the same numbers to float rounding.
    """

    model: str = "ckresnet"
    group: str = "se2"
    group_options: tuple[tuple[str, Any], ...] = ()
    num_elements: int = 8
    partial: bool = True
    sampling: str = "random"
    sample_per_layer: bool = True
    sample_per_batch_element: bool = False
    kernel: KernelSpec = dataclasses.field(default_factory=KernelSpec)
    # Init-only flat names of kernel settings (FLAT_KERNEL_KEYS, same order): folded into
    # ``kernel``, neither stored nor attributes.
    kernel_hidden: dataclasses.InitVar[int | None] = None
    kernel_layers: dataclasses.InitVar[int | None] = None
    omega_0: dataclasses.InitVar[float | None] = None
    mfn_input_scale: dataclasses.InitVar[float | None] = None
    mfn_alpha: dataclasses.InitVar[float | None] = None
    mfn_beta: dataclasses.InitVar[float | None] = None
    separable: dataclasses.InitVar[bool | None] = None
    separable_init: dataclasses.InitVar[str | None] = None
    kernel_size: int = 7
    width: int = 32
    num_blocks: int = 2
    block_width_factors: tuple[float, ...] = (1.0, 1, 2.0, 1)
    pool_blocks: tuple[int, ...] = (1, 2)
    norm: str = "batch"
    dropout: float = 0.0
    dropout_blocks: tuple[int, ...] = ()
    head: str = "pool"
    final_spatial_dim: tuple[int, int] = (1, 1)
    gumbel_horizon: int = dataclasses.field(default=100_000, compare=False)
    precision: str | None = None
    execution: str = "masked"

    def __post_init__(self, *flat_values):
        flat = {k: v for k, v in zip(FLAT_KERNEL_KEYS, flat_values, strict=True) if v is not None}
        object.__setattr__(self, "kernel", flat_kernel_spec(self.kernel, flat))
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; expected one of {MODEL_NAMES}")
        object.__setattr__(self, "group_options", _group_options(self.group_options))
        group = self.make_group()
        group.check_num_elements(self.num_elements)
        if self.sampling not in SAMPLING_METHODS:
            raise ValueError(f"unknown sampling {self.sampling!r}; expected {SAMPLING_METHODS}")
        check_kernel_size(self.kernel_size)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; expected one of {HEADS}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {NORMS}")
        if self.width < 1 or self.num_blocks < 1:
            raise ValueError(
                f"width and num_blocks must be >= 1, got {self.width}, {self.num_blocks}"
            )
        if self.partial:
            group.check_partial(self.num_elements, self.sampling)
        if self.partial and self.head == "mlp":
            raise ValueError("head='mlp' needs a fixed number of elements: use partial=False")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_precision(self.precision)
        if self.execution not in EXECUTIONS:
            raise ValueError(f"unknown execution {self.execution!r}; expected one of {EXECUTIONS}")
        if self.gumbel_horizon < 1:
            raise ValueError(f"gumbel_horizon must be >= 1, got {self.gumbel_horizon}")

    def make_group(self) -> Group:
        """The configured group value, ``get_group(group, **dict(group_options))``."""
        return get_group(self.group, **dict(self.group_options))

    def replace(self, **changes) -> ModelConfig:
        """A copy with ``changes``: fields, or kernel settings by their flat names
        (:data:`FLAT_KERNEL_KEYS`; ``kernel`` may be a net name, applied first, keeping the
        spec's other fields)."""
        kernel = {k: changes.pop(k) for k in list(changes) if k in FLAT_KERNEL_KEYS}
        if isinstance(changes.get("kernel"), str):
            kernel["net"] = changes.pop("kernel")
        if kernel:
            changes["kernel"] = flat_kernel_spec(changes.get("kernel", self.kernel), kernel)
        return dataclasses.replace(self, **changes, **dict.fromkeys(FLAT_KERNEL_KEYS))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """The config of a stored dict: today's (``kernel`` a nested spec dict) or one written
        before issue 15 (``kernel`` a net name, its settings in flat fields; older ones lack
        some: they used the defaults, and separable ones stored before ``separable_init``
        initialised their factors ``"plain"``). ``ValueError`` naming unknown keys."""
        d = upgrade_model_dict(d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}")
        kernel = KernelSpec.from_dict(d.pop("kernel"))
        return cls(
            kernel=kernel, **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples as lists, the kernel spec nested)."""
        out = {f.name: _lists(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return out | {"kernel": self.kernel.to_dict()}


def _separable(self: ModelConfig) -> bool:
    """Whether the group convs render separably (``kernel.render == "separable"``)."""
    return self.kernel.separable


def _gone(name: str) -> property:
    def get(self):
        raise AttributeError(
            f"ModelConfig.{name} is no longer a field: read ModelConfig.kernel "
            f"(its {FLAT_KERNEL_KEYS[name]!r})"
        )

    return property(get)


# The init-only flat names are no attributes (reading one says where the setting is now);
# ``separable`` reads the render.
for _name in FLAT_KERNEL_KEYS:
    setattr(ModelConfig, _name, _gone(_name))
ModelConfig.separable = property(_separable)


def upgrade_model_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """A stored model config dict in today's form: one written before issue 15 (``kernel`` a
    net name, flat kernel settings) gets its kernel spec nested; the flat settings a net does
    not have (e.g. the ``mfn_*`` of a SIREN run) are dropped: they did nothing."""
    if not isinstance(d, Mapping):
        raise ValueError(f"a ModelConfig dict is needed, got {type(d).__name__}")
    d = dict(d)
    if isinstance(d.get("kernel"), Mapping):
        return d
    flat = {k: d.pop(k) for k in list(d) if k in FLAT_KERNEL_KEYS}
    spec = KernelSpec(d.pop("kernel", "siren"))
    flat.setdefault("separable", False)
    # separable runs stored before ``separable_init`` existed initialised their factors plainly
    flat.setdefault("separable_init", "plain" if flat["separable"] else "matched")
    keep = {f.name for f in dataclasses.fields(KernelSpec) + dataclasses.fields(spec.options)}
    flat = {k: v for k, v in flat.items() if FLAT_KERNEL_KEYS[k] in keep}
    return d | {"kernel": flat_kernel_spec(spec, flat).to_dict()}


def _lists(value: Any) -> Any:
    """``value`` with its (nested) tuples as lists, the form JSON gives back."""
    return [_lists(v) for v in value] if isinstance(value, tuple) else value


def _group_options(options) -> tuple[tuple[str, Any], ...]:
    """``group_options`` as sorted ``(name, value)`` pairs of hashable scalars (a mapping, or
    pairs given as tuples or, from ``config.json``, as lists)."""
    items = options.items() if isinstance(options, Mapping) else options
    try:
        pairs = [tuple(item) for item in items]
    except TypeError:
        raise ValueError(f"group_options must be (name, value) pairs, got {options!r}") from None
    out = {}
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise ValueError(f"group_options must be (name, value) pairs, got {options!r}")
        name, value = pair
        ok = isinstance(value, str | bool | int) or (
            isinstance(value, float) and math.isfinite(value)
        )
        if not ok:
            raise ValueError(f"group option {name!r} must be a number or a string, got {value!r}")
        if name in out:
            raise ValueError(f"group option {name!r} is given twice in {options!r}")
        out[name] = value
    return tuple(sorted(out.items()))
