"""Regression pins: today's outputs of small seeded layers, models and one train step.

The numbers in ``tests/regression_pins.npz`` were produced by this file's builders on the
code that matches the authors' release (forward to about 1e-6 relative). A refactor must
reproduce them; a deliberate numerical change regenerates the file and says why in its commit:

    PGCNN_REGEN_PINS=1 python -m pytest -q tests/test_regression.py

Cases avoid what issue 7 deliberately changes (E2 mirror gradients, E2 grids of N = 20, 40,
64, MLP-kernel BatchNorm under masks, the Gumbel schedule), so they pin what must not move.
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax import models
from pgcnn_jax.models import ModelConfig

PINS = pathlib.Path(__file__).parent / "regression_pins.npz"
REGEN = os.environ.get("PGCNN_REGEN_PINS") == "1"
RTOL, ATOL = 2e-5, 2e-6


def _image(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def _lift_group(group, sampling, partial, theta=None):
    lift = pg.nn.LiftingConv(
        in_features=2, out_features=3, group=group, num_elements=4, kernel_size=5,
        sampling=sampling, rngs=nnx.Rngs(0),
    )  # fmt: skip
    conv = pg.nn.GroupConv(
        in_features=3, out_features=2, group=group, num_elements=4, kernel_size=5,
        sampling=sampling, partial=partial, rngs=nnx.Rngs(1),
    )  # fmt: skip
    if theta is not None:
        conv.theta[...] = theta
    x = _image((2, 9, 9, 2))
    f = lift(x, rngs=nnx.Rngs(sample=5))
    h = conv(f, rngs=nnx.Rngs(sample=6))
    return {"lift": f.values, "conv": h.values, "mask": h.mask, "elements": h.elements}


def _pointwise():
    lift = pg.nn.LiftingConv(
        in_features=1, out_features=3, group="se2", num_elements=4, kernel_size=3,
        sampling="deterministic", rngs=nnx.Rngs(0),
    )  # fmt: skip
    pw = pg.nn.PointwiseGroupConv(in_features=3, out_features=4, group="se2", rngs=nnx.Rngs(2))
    f = lift(_image((1, 7, 7, 1), seed=1))
    g_out = jnp.roll(f.elements, 1, axis=1)  # other output elements than the input's
    return {"pointwise": pw(f, g_out, f.mask).values}


TINY = ModelConfig(
    width=4,
    num_blocks=2,
    block_width_factors=(1, 1, 2, 1),
    kernel_size=3,
    kernel_hidden=8,
    pool_blocks=(1,),
    num_elements=4,
)


def _model_forward(changes):
    model = models.build_model(TINY.replace(**changes), num_classes=3, in_features=1,
                               rngs=nnx.Rngs(0))  # fmt: skip
    model.eval()
    forward = nnx.jit(lambda m, x: m(x, rngs=nnx.Rngs(sample=7, dropout=8)))
    return {"logits": forward(model, _image((2, 12, 12, 1), seed=2))}


def _train_step():
    """One Adam step of a tiny SE2 partial CKResNet: loss, theta gradient, updated params."""
    model = models.build_model(TINY, num_classes=3, in_features=1, rngs=nnx.Rngs(0))
    model.train()
    x, y = _image((4, 12, 12, 1), seed=3), jnp.array([0, 1, 2, 1])

    def loss_fn(model):
        logits = model(x, rngs=nnx.Rngs(sample=9, dropout=10))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)
    thetas = jax.tree.leaves(nnx.state(grads, pg.nn.DistributionParam))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    optimizer.update(model, grads)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    # Biases of convs followed by a normalisation have a gradient that is zero up to rounding
    # (|g| ~ 1e-8); Adam's first step moves them by lr * g / (|g| + eps), i.e. by rounding
    # noise times lr, which differs between CPUs. Their sums are not compared (``_`` keys are
    # not pinned).
    numerically_zero = [bool(jnp.all(jnp.abs(g) < 1e-6)) for g in jax.tree.leaves(
        nnx.state(grads, nnx.Param))]  # fmt: skip
    return {
        "loss": loss,
        "theta_grads": jnp.stack([jnp.ravel(t)[0] for t in thetas]),
        "param_sums": jnp.stack([jnp.sum(p) for p in params]),
        "_rounding_only": jnp.asarray(numerically_zero),
    }


CASES = {
    "se2_deterministic": lambda: _lift_group("se2", "deterministic", False),
    "se2_random_partial": lambda: _lift_group("se2", "random", True, theta=0.6),
    "e2_deterministic": lambda: _lift_group("e2", "deterministic", False),
    "e2_random_partial": lambda: _lift_group("e2", "random", True, theta=0.7),
    "pointwise": _pointwise,
    "ckresnet_se2_partial": lambda: _model_forward({}),
    "ckresnet_e2_partial": lambda: _model_forward(dict(group="e2")),
    "ckresnet_t2": lambda: _model_forward(
        dict(group="t2", num_elements=1, partial=False, sampling="deterministic")
    ),
    "gcnn_se2_full": lambda: _model_forward(
        dict(
            model="gcnn",
            num_blocks=3,
            block_width_factors=(1, 1, 2, 2),
            pool_blocks=(2,),
            partial=False,
        )
    ),  # fmt: skip
    "train_step_se2_partial": _train_step,
}


def _flat(name, out):
    return {f"{name}/{k}": np.asarray(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def pins():
    if REGEN:
        data = {}
        for name, fn in CASES.items():
            data.update(_flat(name, {k: v for k, v in fn().items() if not k.startswith("_")}))
        np.savez(PINS, **data)
    with np.load(PINS) as f:
        return dict(f)


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_pins(pins, name):
    out = CASES[name]()
    skip = np.asarray(out.pop("_rounding_only", np.zeros(0, bool)))
    got = _flat(name, out)
    expected = {k: v for k, v in pins.items() if k.startswith(name + "/")}
    assert sorted(got) == sorted(expected), name
    for k, v in got.items():
        want = expected[k]
        if k.endswith("/param_sums") and skip.size:
            assert skip.shape == v.shape and 0 < skip.sum() < skip.size / 4
            v, want = v[~skip], want[~skip]
        np.testing.assert_allclose(v, want, rtol=RTOL, atol=ATOL, err_msg=k)


def test_pins_are_not_trivial(pins):
    """A guard against pinning zeros: every pinned output has spread."""
    for k, v in pins.items():
        if k.endswith(("/mask", "/elements")):
            continue
        assert np.all(np.isfinite(v)), k
        assert np.std(v) > 0 or v.size == 1 and v != 0, k
