"""Public helpers to check equivariance exactly on the pixel grid."""

from pgcnn_jax.testing._equivariance import (
    EquivarianceError,
    assert_equivariant,
    equivariance_error,
    grid_elements,
    group_permutation,
    transform_features,
    transform_image,
)

__all__ = [
    "EquivarianceError",
    "assert_equivariant",
    "equivariance_error",
    "grid_elements",
    "group_permutation",
    "transform_features",
    "transform_image",
]
