"""pgcnn_jax.analysis."""
