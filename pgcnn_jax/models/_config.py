"""Frozen, validated model configuration (DESIGN 7)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from pgcnn_jax.groups import SAMPLING_METHODS, Group, get_group
from pgcnn_jax.kernels import KERNEL_NAMES, KernelSpec, check_kernel_size
from pgcnn_jax.nn import check_precision

MODEL_NAMES = ("ckresnet", "gcnn", "augerino_ckresnet", "augerino_gcnn")
HEADS = ("pool", "t2", "mlp")
NORMS = ("batch", "layer")
EXECUTIONS = ("masked", "adaptive")


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
      kernel: kernel net name (:data:`pgcnn_jax.kernels.KERNEL_NAMES`).
      kernel_hidden: hidden width ``H`` of the kernel net (shortcuts use ``H // 2``).
      kernel_layers: layers of the kernel net.
      omega_0: SIREN frequency.
      mfn_input_scale: MFN filter frequency scale (``fourier``, ``gabor``, ``magnet``).
      mfn_alpha: Gamma shape numerator of the Gabor / MAGNet envelopes.
      mfn_beta: Gamma rate of the Gabor / MAGNet envelopes.
      separable: render the group convs separably (``psi_S(A(u)^-1 p) psi_G(u^-1 v)``, a 1x1
        group mixing then a depthwise spatial conv); the lifting conv, the shortcuts and the
        T(2) head stay joint.
      separable_init: initialisation of the separable factors,
        :data:`pgcnn_jax.kernels.FACTOR_INITS` (``"matched"``: the joint net's spectrum and
        scale; ``"plain"``: each net on its own, as before issue 14). The kernel settings above
        form :attr:`kernel_spec`.
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
    kernel: str = "siren"
    kernel_hidden: int = 32
    kernel_layers: int = 3
    omega_0: float = 10.0
    mfn_input_scale: float = 256.0
    mfn_alpha: float = 6.0
    mfn_beta: float = 1.0
    separable: bool = False
    separable_init: str = "matched"
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

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; expected one of {MODEL_NAMES}")
        object.__setattr__(self, "group_options", _group_options(self.group_options))
        group = self.make_group()
        group.check_num_elements(self.num_elements)
        if self.sampling not in SAMPLING_METHODS:
            raise ValueError(f"unknown sampling {self.sampling!r}; expected {SAMPLING_METHODS}")
        if self.kernel not in KERNEL_NAMES:
            raise ValueError(f"unknown kernel {self.kernel!r}; expected one of {KERNEL_NAMES}")
        if not isinstance(self.separable, bool):
            raise ValueError(f"separable must be a bool, got {self.separable!r}")
        self.kernel_spec  # builds (validates) the kernel spec: ValueError naming a bad field
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

    @property
    def kernel_spec(self) -> KernelSpec:
        """The :class:`~pgcnn_jax.kernels.KernelSpec` of the model's group convs (built from
        the flat kernel fields; ``ValueError`` naming a bad one)."""
        return KernelSpec(
            net=self.kernel,
            hidden=self.kernel_hidden,
            layers=self.kernel_layers,
            omega_0=self.omega_0,
            mfn_input_scale=self.mfn_input_scale,
            mfn_alpha=self.mfn_alpha,
            mfn_beta=self.mfn_beta,
            render="separable" if self.separable else "joint",
            factor_init=self.separable_init,
        )

    def make_group(self) -> Group:
        """The configured group value, ``get_group(group, **dict(group_options))``."""
        return get_group(self.group, **dict(self.group_options))

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


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
