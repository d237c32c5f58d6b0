"""Conv precision (issue 8 item 5): the default keeps today's numerics bit for bit; bfloat16
runs forward and backward convs on bfloat16 operands and stays within bfloat16 error of
float32; every conv of a model follows ModelConfig.precision and the --precision flag."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import TINY
from absl import flags
from flax import nnx

from pgcnn_jax.models import ModelConfig, build_model
from pgcnn_jax.nn import CONV_PRECISIONS, GroupConv, LiftingConv, PointwiseGroupConv, conv2d


def _operands(key):
    kx, kw = jax.random.split(key)
    return jax.random.normal(kx, (2, 7, 7, 6)), jax.random.normal(kw, (1, 3, 3, 6, 5))


def _today(x, w):
    """The conv as every layer ran it before the setting existed."""
    return jax.lax.conv_general_dilated(
        x, w[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_dtypes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [
        tuple(str(v.aval.dtype) for v in e.invars)
        for e in jaxpr.eqns
        if e.primitive is jax.lax.conv_general_dilated_p
    ]


def test_default_is_bitwise_today(key):
    x, w = _operands(key)
    np.testing.assert_array_equal(conv2d(x, w, "same"), _today(x, w))
    assert ModelConfig().precision is None
    if jax.default_backend() == "cpu":  # XLA:CPU convs are full float32 at any precision
        for p in ("float32", "tf32"):
            np.testing.assert_array_equal(conv2d(x, w, "same", precision=p), _today(x, w))


def test_bfloat16_close_to_float32_forward_and_backward(key):
    x, w = _operands(key)

    def loss(x, w, precision):
        return jnp.sum(jnp.sin(conv2d(x, w, "same", precision=precision)))

    y32, y16 = conv2d(x, w, "same"), conv2d(x, w, "same", precision="bfloat16")
    assert y16.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(y32)))
    err = float(jnp.max(jnp.abs(y16 - y32)))
    assert err < 2e-2 * scale  # bfloat16 keeps 8 bits of mantissa
    assert err > 0  # and it really ran in bfloat16
    g32 = jax.grad(loss, argnums=(0, 1))(x, w, None)
    g16 = jax.grad(loss, argnums=(0, 1))(x, w, "bfloat16")
    for a, b in zip(g32, g16, strict=True):
        assert b.dtype == jnp.float32
        assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a)) < 3e-2
    # Forward, input-gradient and weight-gradient convs all take bfloat16 operands.
    for precision, dtype in (("bfloat16", "bfloat16"), (None, "float32")):
        grad = jax.grad(lambda x, w, p=precision: loss(x, w, p), argnums=(0, 1))
        assert _conv_dtypes(grad, x, w) == [(dtype, dtype)] * 3


def test_model_convs_follow_config(key):
    x = jax.random.normal(key, (2, 9, 9, 1))
    config = TINY.replace(precision="bfloat16")
    model = build_model(config, num_classes=3, in_features=1, rngs=nnx.Rngs(0))
    convs = (LiftingConv, GroupConv, PointwiseGroupConv)
    layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, convs)]
    assert len(layers) >= 4 and all(m.precision == "bfloat16" for m in layers)
    forward = nnx.jit(lambda m, x: m(x, rngs=nnx.Rngs(sample=1)))
    low = forward(model, x)
    for m in layers:  # the same weights at lax's default precision
        m.precision = None
    ref = forward(model, x)
    scale = float(jnp.max(jnp.abs(ref)))
    assert 0 < float(jnp.max(jnp.abs(low - ref))) < 5e-2 * scale


def test_bad_precision_names_the_value(key):
    x, w = _operands(key)
    assert CONV_PRECISIONS == (None, "float32", "tf32", "bfloat16")
    with pytest.raises(ValueError, match="'fp16'"):
        conv2d(x, w, "same", precision="fp16")
    with pytest.raises(ValueError, match="'half'"):
        ModelConfig(precision="half")


def test_cli_precision_flag():
    from experiments import _cli

    fv = flags.FLAGS
    fv.unparse_flags()
    try:
        fv(["prog", "--precision=tf32"])
        _, config = _cli.resolve(("cifar10",), None)
    finally:
        fv.unparse_flags()
    assert config.model.precision == "tf32"
