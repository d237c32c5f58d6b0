"""Strict test settings (STYLE 13): rank-promotion errors and a fresh key per test."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key(request):
    """A PRNG key that differs per test (derived from the test's node id)."""
    return jax.random.key(abs(hash(request.node.nodeid)) % (2**31))
