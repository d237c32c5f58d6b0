"""The convolution floor of a jitted step (experiments.bench): every ``conv_general_dilated``
of its jaxpr, with the exact shapes, dtypes and parameters, run alone on random operands."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp

__all__ = ["collect_convs", "conv_macs", "floor_fn", "live_jaxpr", "random_operands"]


def _sub_jaxprs(value: Any):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def live_jaxpr(closed: jax.extend.core.ClosedJaxpr) -> jax.extend.core.Jaxpr:
    """``closed`` without the equations its outputs do not need (JAX's own dead-code pass, the
    one ``jit`` applies; XLA removes the same work), e.g. the input gradient a custom VJP of a
    bfloat16 conv computes for the image."""
    from jax._src.interpreters import partial_eval as pe  # no public entry point

    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return jaxpr


def collect_convs(jaxpr: Any, times: int = 1) -> list[dict[str, Any]]:
    """Every ``conv_general_dilated`` of ``jaxpr`` (a ``ClosedJaxpr`` or ``Jaxpr``), nested
    ones included, as ``{"lhs", "rhs" (ShapeDtypeStruct), "params", "times"}``; ``times`` counts
    the executions of a conv inside a ``scan`` (``lax.map``)."""
    if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is jax.lax.conv_general_dilated_p:
            lhs, rhs = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
            res = eqn.outvars[0].aval
            out.append(
                dict(
                    lhs=lhs,
                    rhs=rhs,
                    out=jax.ShapeDtypeStruct(res.shape, res.dtype),
                    params=dict(eqn.params),
                    times=times,
                )
            )
            continue
        inner = times * int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else times
        found = [
            c
            for v in eqn.params.values()
            for sub in _sub_jaxprs(v)
            for c in collect_convs(sub, inner)
        ]
        if found and eqn.primitive.name in ("cond", "while"):
            raise ValueError(
                f"{len(found)} conv(s) inside a {eqn.primitive.name!r}: their number of "
                "executions is not known before running"
            )
        out += found
    return out


def conv_macs(convs: list[dict[str, Any]]) -> int:
    """Multiply-adds of the convs of :func:`collect_convs` as written: every output element
    sums ``(kernel elements) / (output features)`` products (input features per group times
    taps; for a batch-grouped kernel gradient its spatial taps are the output gradient's
    pixels), times the executions. Zero taps (padding, a disc mask) are counted."""
    total = 0
    for c in convs:
        out_dim = c["params"]["dimension_numbers"].rhs_spec[0]
        per_output = math.prod(c["rhs"].shape) // c["rhs"].shape[out_dim]
        total += math.prod(c["out"].shape) * per_output * c["times"]
    return total


def random_operands(key: jax.Array, convs: list[dict[str, Any]]) -> list[tuple]:
    """Standard-normal ``(lhs, rhs)`` per conv of :func:`collect_convs` (stacked ``times``
    deep for convs inside a ``scan``), in the convs' own dtypes."""

    def one(k, spec, times):
        shape = spec.shape if times == 1 else (times, *spec.shape)
        return jax.random.normal(k, shape, jnp.float32).astype(spec.dtype)

    keys = jax.random.split(key, 2 * len(convs))
    return [
        (one(keys[2 * i], c["lhs"], c["times"]), one(keys[2 * i + 1], c["rhs"], c["times"]))
        for i, c in enumerate(convs)
    ]


def floor_fn(convs: list[dict[str, Any]]):
    """A function of ``[(lhs, rhs), ...]`` running every conv of ``convs`` once per execution."""
    prim = jax.lax.conv_general_dilated_p

    def run(operands):
        outs = []
        for conv, (lhs, rhs) in zip(convs, operands, strict=True):
            params = conv["params"]
            if conv["times"] == 1:
                outs.append(prim.bind(lhs, rhs, **params))
            else:
                outs.append(jax.lax.map(lambda a, p=params: prim.bind(a[0], a[1], **p), (lhs, rhs)))
        return outs

    return run
