"""pgcnn-jax: Partial Group Equivariant CNNs in JAX / Flax NNX."""

from pgcnn_jax import groups, kernels, nn, testing

__all__ = ["groups", "kernels", "nn", "testing"]
__version__ = "0.1.0"
