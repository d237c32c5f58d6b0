"""pgcnn_jax.models."""
