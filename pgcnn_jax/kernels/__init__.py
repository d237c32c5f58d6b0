"""pgcnn_jax.kernels."""
