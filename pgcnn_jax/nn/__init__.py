"""pgcnn_jax.nn."""
