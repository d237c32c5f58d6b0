"""Models of partial group equivariant CNNs: CKResNet, the 13-layer GCNN, Augerino baselines,
their regularisers (REFERENCE 4)."""

from pgcnn_jax.models._augerino import AugerinoCKResNet, AugerinoGCNN, AugmentationParam
from pgcnn_jax.models._build import build_model
from pgcnn_jax.models._ckresnet import CKResNet, ResBlock
from pgcnn_jax.models._config import (
    EXECUTIONS,
    FLAT_KERNEL_KEYS,
    HEADS,
    MODEL_NAMES,
    NORMS,
    ModelConfig,
    upgrade_model_dict,
)
from pgcnn_jax.models._gcnn import GCNN, GCNNBlock
from pgcnn_jax.models._heads import MLPPooling, T2FinalConv
from pgcnn_jax.models._memory import (
    available_memory,
    check_kernel_memory,
    kernel_memory_bytes,
    rendered_sets,
)
from pgcnn_jax.models._penalties import (
    count_params,
    kernel_norm_penalty,
    monotonic_penalty,
    partial_layers,
)
from pgcnn_jax.models._resample import resample, rotate_images, transform_images

__all__ = [
    "EXECUTIONS",
    "FLAT_KERNEL_KEYS",
    "HEADS",
    "MODEL_NAMES",
    "NORMS",
    "GCNN",
    "AugerinoCKResNet",
    "AugerinoGCNN",
    "AugmentationParam",
    "CKResNet",
    "GCNNBlock",
    "MLPPooling",
    "ModelConfig",
    "ResBlock",
    "T2FinalConv",
    "available_memory",
    "build_model",
    "check_kernel_memory",
    "count_params",
    "kernel_memory_bytes",
    "kernel_norm_penalty",
    "monotonic_penalty",
    "partial_layers",
    "rendered_sets",
    "resample",
    "rotate_images",
    "transform_images",
    "upgrade_model_dict",
]
