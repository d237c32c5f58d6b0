"""Analysis behind the paper's figures: learned subsets, equivariance profiles and the class
probabilities of a rotated image."""

from pgcnn_jax.analysis._kernel_init import angle_roughness, sampling_noise_ratio
from pgcnn_jax.analysis._profile import EquivarianceProfile, equivariance_profile, rotate_images
from pgcnn_jax.analysis._record import conv_layers, record_features
from pgcnn_jax.analysis._rotation import rotated_copies, rotation_response
from pgcnn_jax.analysis._subsets import LayerSubset, learned_subsets

__all__ = [
    "EquivarianceProfile",
    "LayerSubset",
    "angle_roughness",
    "conv_layers",
    "equivariance_profile",
    "learned_subsets",
    "record_features",
    "rotate_images",
    "rotated_copies",
    "rotation_response",
    "sampling_noise_ratio",
]
