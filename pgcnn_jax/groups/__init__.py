"""pgcnn_jax.groups."""
