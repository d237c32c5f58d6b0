"""pgcnn_jax.data."""
