"""pgcnn-jax: Partial Group Equivariant CNNs in JAX / Flax NNX."""

from pgcnn_jax import analysis, data, groups, kernels, models, nn, testing, train
from pgcnn_jax.kernels import KernelSpec

__all__ = [
    "KernelSpec",
    "analysis",
    "data",
    "groups",
    "kernels",
    "models",
    "nn",
    "testing",
    "train",
]
__version__ = "0.1.0"
