"""pgcnn_jax.train."""
