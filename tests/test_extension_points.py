"""The worked examples of docs/ARCHITECTURE.md that live here: a toy group and a preset, each
one value plus one registration. (The toy kernel net is in test_kernel_registry.py, the toy
dataset in test_dataset_protocol.py.)"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import jax
import pytest
from _helpers import lift_relu_conv

from experiments import _preset, configs
from pgcnn_jax.groups import SE2, ImpliedSettings, _base, get_group, register_group
from pgcnn_jax.testing import assert_equivariant, equivariance_error

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class HalfTurn(SE2):
    """C2: the identity and the rotation by 180 degrees (the docs' example, verbatim)."""

    name = "half_turn"
    label = "C2"
    fixed_num_elements = 2

    def implied_settings(self):
        return ImpliedSettings(num_elements=2, sampling="deterministic", sample_per_layer=False)

    def exact_elements(self):
        return [(math.pi,)]


@pytest.fixture
def half_turn(monkeypatch):
    """The toy group registered in a copy of the registry (restored after the test)."""
    monkeypatch.setattr(_base, "_REGISTRY", dict(_base._REGISTRY))
    register_group("half_turn", HalfTurn)
    return get_group("half_turn")


def test_a_toy_group_is_one_class_and_one_registration(half_turn, key):
    assert isinstance(half_turn, HalfTurn) and "half_turn" in _base.registered_names()
    with pytest.raises(ValueError, match="exactly two elements"):
        half_turn.check_num_elements(4)
    net = lift_relu_conv(half_turn, 2)
    x = jax.random.normal(key, (1, 11, 11, 2))
    (report,) = assert_equivariant(net, x, half_turn)  # the half-turn, exactly
    assert report.max_error <= 1e-5 * max(1.0, report.scale)
    # negative control: a fixed random spatial weighting of the input breaks equivariance
    weight = jax.random.uniform(jax.random.fold_in(key, 1), (1, 11, 11, 1))
    broken = equivariance_error(lambda x: net(x * weight), x, half_turn, (math.pi,))
    assert broken.relative_error > 1e-2, broken
    # a quarter turn is not in the group: no exact prediction of the output exists
    with pytest.raises(ValueError, match="not closed under element"):
        equivariance_error(net, x, half_turn, (math.pi / 2,))
    with pytest.raises(ValueError, match="already registered"):
        register_group("half_turn", HalfTurn)


def test_a_preset_is_one_value(half_turn, monkeypatch):
    monkeypatch.setattr(_preset, "PRESETS", dict(_preset.PRESETS))
    base = configs.get_preset("rotmnist-se2-partial")
    toy = _preset.with_overrides(base, group="half_turn", width=4, kernel_hidden=8)
    _preset.add_preset("rotmnist-half_turn", toy, "docs/ARCHITECTURE.md example", "-")
    preset = _preset.PRESETS["rotmnist-half_turn"]
    # the group's implied settings apply; the CLI command and the docs line follow
    assert toy.model.num_elements == 2 and toy.model.sampling == "deterministic"
    assert preset.command == "python -m experiments.rotmnist --preset=rotmnist-half_turn"
    assert preset.doc.startswith("rotmnist-half_turn: docs/ARCHITECTURE.md example.")
    derived = _preset.get_preset("rotmnist-half_turn", seed=3, epochs=2)
    assert (derived.seed, derived.epochs, derived.model.group) == (3, 2, "half_turn")
    with pytest.raises(RuntimeError, match="duplicate preset"):
        _preset.add_preset("rotmnist-half_turn", toy, "again", "-")


def test_the_architecture_doc_names_tests_that_exist():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for ref in (
        "tests/test_extension_points.py::test_a_toy_group_is_one_class_and_one_registration",
        "tests/test_extension_points.py::test_a_preset_is_one_value",
        "tests/test_kernel_registry.py::test_a_registered_toy_net_builds_convs_and_models",
        "tests/test_dataset_protocol.py::test_a_toy_dataset_is_one_class_and_one_registration",
    ):
        assert ref in text, ref
        path, name = ref.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), ref
