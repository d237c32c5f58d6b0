"""``build_model``: a model from a frozen :class:`ModelConfig`."""

from __future__ import annotations

from flax import nnx

from pgcnn_jax.models._augerino import AugerinoCKResNet, AugerinoGCNN
from pgcnn_jax.models._ckresnet import CKResNet
from pgcnn_jax.models._common import check_positive_int
from pgcnn_jax.models._config import ModelConfig
from pgcnn_jax.models._gcnn import GCNN
from pgcnn_jax.models._memory import check_kernel_memory
from pgcnn_jax.nn import adaptive_sizes, set_active_elements

_MODELS = {
    "ckresnet": CKResNet,
    "gcnn": GCNN,
    "augerino_ckresnet": AugerinoCKResNet,
    "augerino_gcnn": AugerinoGCNN,
}


def build_model(
    config: ModelConfig, *, num_classes: int, in_features: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Builds ``config.model`` for ``in_features`` input channels and ``num_classes`` classes.

    Every model maps images ``[B, H, W, in_features]`` to logits ``[B, num_classes]`` with
    ``model(x, rngs=nnx.Rngs(sample=..., dropout=...))`` and follows ``model.train()`` /
    ``model.eval()`` (BatchNorm running statistics, dropout, Gumbel counters).

    With ``config.execution == "adaptive"`` the partial layers start at the sizes of their
    initial thetas (:func:`pgcnn_jax.nn.adaptive_sizes`).

    A config whose kernel rendering cannot fit in memory (:func:`check_kernel_memory`, one
    element set per forward) is refused with a ``ValueError`` before anything is built.
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_features", in_features)
    check_kernel_memory(config, in_features=in_features)
    cls = _MODELS[config.model]
    model = cls(config, num_classes=num_classes, in_features=in_features, rngs=rngs)
    if config.execution == "adaptive":
        set_active_elements(model, adaptive_sizes(model))
    return model
