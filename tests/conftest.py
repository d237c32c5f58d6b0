"""Strict test settings (STYLE 13): rank-promotion errors and a fresh key per test."""

import os
import zlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def key_seed(nodeid: str) -> int:
    """The seed of a test's key: a CRC-32 of its node id, the same in every process (unlike
    ``hash``, which Python salts per process), so a failure can be replayed."""
    return zlib.crc32(nodeid.encode("utf-8")) % (2**31)


@pytest.fixture
def key(request):
    """A PRNG key that differs per test (derived from the test's node id)."""
    return jax.random.key(key_seed(request.node.nodeid))
