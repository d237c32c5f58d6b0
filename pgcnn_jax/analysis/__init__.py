"""Analysis behind the paper's figures: learned subsets and equivariance profiles."""

from pgcnn_jax.analysis._profile import EquivarianceProfile, equivariance_profile, rotate_images
from pgcnn_jax.analysis._record import conv_layers, record_features
from pgcnn_jax.analysis._subsets import LayerSubset, learned_subsets

__all__ = [
    "EquivarianceProfile",
    "LayerSubset",
    "conv_layers",
    "equivariance_profile",
    "learned_subsets",
    "record_features",
    "rotate_images",
]
