"""Kernel nets registered by name (issue 15 item 2): a new net is one file and one
:func:`register_kernel_net` call; the model config nests its :class:`KernelSpec`; config.json
files written before (flat kernel fields) still load and resume."""

import dataclasses
import json
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import pytest
from _helpers import TINY, tiny_config, write_mnist_npz
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.kernels import KERNEL_NAMES, KernelSpec, register_kernel_net, registered_kernel_nets
from pgcnn_jax.models import ModelConfig, build_model
from pgcnn_jax.train import TrainConfig, config_differences, train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A config.json of the tiny MNIST6-180 run (``tiny_config``) written by the code before issue 15
# (commit 6127afd): the kernel net a name, its settings in flat model fields.
STORED = ROOT / "tests" / "data" / "config_before_issue15.json"


# ------------------------------------------------------------ a toy kernel net, added here
@dataclasses.dataclass(frozen=True)
class ToyOptions:
    gain: float = 1.0


class ToyTanhNet(nnx.Module):
    """``psi(x) = gain tanh(W x + b)``: one layer, no hidden width."""

    def __init__(self, in_features, out_features, *, gain, rngs):
        self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
        self.gain = gain

    def __call__(self, x):
        return self.gain * jnp.tanh(self.linear(x))


def toy_factory(in_features, out_features, *, hidden, layers, options, factor, rngs):
    return ToyTanhNet(in_features, out_features, gain=options.gain, rngs=rngs)


register_kernel_net("toy_tanh", toy_factory, options=ToyOptions, min_layers=1)


def test_a_registered_toy_net_builds_convs_and_models(key):
    assert "toy_tanh" in registered_kernel_nets() and "toy_tanh" not in KERNEL_NAMES
    spec = KernelSpec("toy_tanh", layers=1, options={"gain": 2.0})
    assert spec.options == ToyOptions(gain=2.0) and spec.replace(gain=3.0).options.gain == 3.0
    conv_kw = dict(group="se2", num_elements=4, kernel_size=3, sampling="deterministic")
    lift = pg.nn.LiftingConv(1, 2, kernel=spec, rngs=nnx.Rngs(1), **conv_kw)
    conv = pg.nn.GroupConv(2, 3, kernel=spec, rngs=nnx.Rngs(0), **conv_kw)
    assert isinstance(conv.kernel_net, ToyTanhNet) and conv.kernel_net.gain == 2.0
    h = nnx.jit(lambda lift, conv, x: conv(lift(x)))(
        lift, conv, jax.random.normal(key, (1, 6, 6, 1))
    )
    assert h.values.shape == (1, 6, 6, 4, 3) and bool(jnp.all(jnp.isfinite(h.values)))
    separable = pg.nn.GroupConv(2, 3, kernel=spec, separable=True, rngs=nnx.Rngs(0), **conv_kw)
    assert isinstance(separable.kernel_net.spatial, ToyTanhNet)
    # a whole model, and its config through config.json
    model_config = TINY.replace(kernel=spec)
    model = build_model(model_config, num_classes=2, in_features=1, rngs=nnx.Rngs(0))
    assert isinstance(model.blocks[0].conv1.kernel_net, ToyTanhNet)
    assert isinstance(model.blocks[0].shortcut.kernel_net, ToyTanhNet)  # (hidden // 2: unused)
    config = TrainConfig(dataset="mnist6_180", model=model_config)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_registry_errors():
    with pytest.raises(ValueError, match="'toy_tanh' is already registered"):
        register_kernel_net("toy_tanh", toy_factory, options=ToyOptions)
    with pytest.raises(ValueError, match="must be a frozen dataclass"):
        register_kernel_net("toy_other", toy_factory, options=dict)
    with pytest.raises(ValueError, match="unknown kernel net 'nope'.*toy_tanh"):
        KernelSpec("nope")
    with pytest.raises(ValueError, match=r"'toy_tanh' has no setting\(s\) \['omega_0'\]"):
        KernelSpec("toy_tanh", options={"omega_0": 3.0})
    with pytest.raises(ValueError, match="must be a ToyOptions or a mapping, got 3"):
        KernelSpec("toy_tanh", options=3)
    with pytest.raises(ValueError, match="'siren' kernel net needs layers >= 2, got 1"):
        KernelSpec("siren", layers=1)


# ------------------------------------------------------------ nothing else branches on names
_NAMES = "|".join(KERNEL_NAMES)
_KERNEL_BRANCHING = [
    rf"(==|!=)\s*[\"']({_NAMES})[\"']",
    rf"[\"']({_NAMES}|mlp_)[\"']\s*(==|!=|(not\s+)?in\b)",
    r"startswith\(\s*[\"']mlp_",
    r"\.net\s*(==|!=|(not\s+)?in\b)",
    r"\bMFN_KINDS\b",
    r"isinstance\([^)]*\b(SIREN|MLPKernel|FourierNet|GaborNet|MAGNet)\b",
]


def test_no_kernel_net_branching_outside_kernels():
    hits = []
    for top in ("pgcnn_jax", "experiments"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.parent.name == "kernels" and path.parent.parent.name == "pgcnn_jax":
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if any(re.search(p, line) for p in _KERNEL_BRANCHING):
                    hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "kernel-net branching outside pgcnn_jax/kernels:\n" + "\n".join(hits)
    # the patterns catch what they are for
    assert re.search(_KERNEL_BRANCHING[2], 'if config.kernel.startswith("mlp_"):')
    assert re.search(_KERNEL_BRANCHING[3], 'if spec.net == "siren":')


# ------------------------------------------------------------ the nested config and the old one
def _stored() -> dict:
    with open(STORED) as f:
        return json.load(f)


def test_flat_config_json_loads_into_the_nested_spec():
    stored = _stored()
    assert stored["model"]["kernel"] == "siren" and "omega_0" in stored["model"]
    config = TrainConfig.from_dict(stored)
    assert config == tiny_config("npz:DATA")
    assert config.model.kernel == KernelSpec("siren", hidden=8)
    assert config_differences(stored, config) == []
    nested = config.to_dict()
    assert nested["model"]["kernel"] == {
        "net": "siren", "hidden": 8, "layers": 3, "options": {"omega_0": 10.0},
        "render": "joint", "spatial_hidden": None, "factor_init": "matched",
    }  # fmt: skip
    for name in ("kernel_hidden", "omega_0", "mfn_alpha", "separable", "separable_init"):
        assert name not in nested["model"]
        if name != "separable":  # (which reads the render)
            with pytest.raises(AttributeError, match=f"ModelConfig.{name} is no longer a field"):
                getattr(config.model, name)
    assert config.model.separable is False
    # the nested form is also what --set=kernel={...} gives
    assert ModelConfig().replace(kernel=nested["model"]["kernel"]).kernel == config.model.kernel
    # another net and its settings, in the flat form: the same spec as the nested one
    flat = _stored()
    flat["model"] |= dict(kernel="gabor", mfn_alpha=3.0, mfn_input_scale=64.0, separable=True)
    want = config.replace(model=config.model.replace(
        kernel=KernelSpec("gabor", hidden=8, options={"alpha": 3.0, "input_scale": 64.0},
                          render="separable"),
    ))  # fmt: skip
    assert TrainConfig.from_dict(flat) == want and config_differences(flat, want) == []
    assert config_differences(flat, config) == [
        "model.kernel.net", "model.kernel.options.alpha", "model.kernel.options.beta",
        "model.kernel.options.input_scale", "model.kernel.options.omega_0", "model.kernel.render",
    ]  # fmt: skip
    # the flat names still set the nested settings (the CLIs' --set keys)
    assert want.model == config.model.replace(
        kernel="gabor", mfn_alpha=3.0, mfn_input_scale=64.0, separable=True
    )


def test_older_flat_configs_load_as_what_they_ran():
    """Configs stored before the MFN / separable keys existed used their defaults; separable
    ones stored before ``separable_init`` initialised their factors plainly."""
    older = _stored()
    for name in ("separable", "mfn_input_scale", "mfn_alpha", "mfn_beta", "separable_init"):
        del older["model"][name]
    config = tiny_config("npz:DATA")
    assert TrainConfig.from_dict(older) == config and config_differences(older, config) == []
    older["model"]["separable"] = True
    loaded = TrainConfig.from_dict(older)
    assert loaded.model.kernel == KernelSpec(hidden=8, render="separable", factor_init="plain")
    assert config_differences(older, loaded) == []
    matched = loaded.model.replace(separable_init="matched")
    assert config_differences(older, loaded.replace(model=matched)) == ["model.kernel.factor_init"]
    with pytest.raises(ValueError, match=r"unknown model config key\(s\) \['omega_1'\]"):
        TrainConfig.from_dict(_stored() | {"model": _stored()["model"] | {"omega_1": 1.0}})


def test_flat_setting_errors():
    with pytest.raises(ValueError, match=r"'siren' has no setting\(s\) \['alpha'\]"):
        ModelConfig().replace(mfn_alpha=3.0)
    with pytest.raises(ValueError, match="separable must be a bool, got 1"):
        ModelConfig().replace(separable=1)
    with pytest.raises(ValueError, match="beta must be a finite number > 0, got 0.0"):
        ModelConfig().replace(kernel="magnet", mfn_beta=0.0)
    with pytest.raises(ValueError, match="unknown kernel spec key"):
        ModelConfig.from_dict({"kernel": {"net": "siren", "width": 3}})


def test_a_run_stored_with_a_flat_config_resumes(tmp_path):
    """A run directory whose config.json has the flat form (as written before issue 15)
    resumes with today's config and continues the same trajectory."""
    data = write_mnist_npz(tmp_path / "mnist.npz")
    config = tiny_config(data)
    workdir = tmp_path / "run"
    first = train_and_evaluate(config.replace(max_steps=2), workdir, progress=False)
    assert first["steps"] == 2
    stored = _stored() | {"data": data, "max_steps": 2}
    with open(workdir / "config.json", "w") as f:
        json.dump(stored, f)
    second = train_and_evaluate(config.replace(max_steps=3), workdir, progress=False)
    assert second["session_start_step"] == 2 and second["steps"] == 3
    with open(os.path.join(workdir, "config.json")) as f:  # rewritten in the nested form
        assert json.load(f)["model"]["kernel"]["net"] == "siren"
    # a different setting is still refused, by its nested name
    with pytest.raises(ValueError, match=r"differing: model\.kernel\.options\.omega_0"):
        train_and_evaluate(config.replace(model=config.model.replace(omega_0=30.0)), workdir)
    fresh = train_and_evaluate(config.replace(max_steps=3), tmp_path / "fresh", progress=False)
    for key in ("test_loss", "best_val_loss", "theta"):
        assert second[key] == fresh[key], key
