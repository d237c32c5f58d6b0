"""Every public name is importable (STYLE 4)."""

import importlib

import pytest

import pgcnn_jax

SUBPACKAGES = ["groups", "kernels", "nn", "testing", "data", "models", "train", "analysis"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_public_names_import(name):
    mod = importlib.import_module(f"pgcnn_jax.{name}")
    assert mod.__all__, name
    for public in mod.__all__:
        assert hasattr(mod, public), f"pgcnn_jax.{name}.{public}"


def test_contract_names():
    for public in ("LiftingConv", "GroupConv", "PointwiseGroupConv", "DistributionParam"):
        assert hasattr(pgcnn_jax.nn, public)
    assert callable(pgcnn_jax.groups.get_group)
    assert callable(pgcnn_jax.testing.equivariance_error)
    assert callable(pgcnn_jax.testing.assert_equivariant)
