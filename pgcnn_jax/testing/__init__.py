"""pgcnn_jax.testing."""
