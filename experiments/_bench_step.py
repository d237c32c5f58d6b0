"""The bench's configs and its timed run of one config (:func:`run_config`); the command
line is :mod:`experiments.bench`."""

from __future__ import annotations

import os
import re
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments._floor import collect_convs, conv_macs, floor_fn, live_jaxpr, random_operands
from experiments.configs import PRESETS, get_preset
from pgcnn_jax.data import get_spec
from pgcnn_jax.nn import (
    CONV_PRECISIONS,
    DEPTHWISE_METHODS,
    DistributionParam,
    active_elements,
    depthwise_method,
    partial_layers,
    update_adaptive,
)
from pgcnn_jax.train import Objective, TrainConfig, create_model, create_optimizer, train_step

_CONFIG = re.compile(
    r"^(?P<group>[a-z0-9]+)-(?P<n>[0-9]+)-(?P<kind>full|partial|partial-half)(?P<sep>-sep)?$"
)
#: ``--precision`` values: ``default`` is ``lax``'s default (what training uses unless told).
PRECISIONS = ("default", *(p for p in CONV_PRECISIONS if p is not None))
EXECUTIONS = ("masked", "adaptive")
#: ``--depthwise`` values: ``auto`` is the backend's default
#: (:func:`pgcnn_jax.nn.depthwise_method`).
DEPTHWISES = ("auto", *DEPTHWISE_METHODS)


# ----------------------------------------------------------------------------- configs


def bench_config(
    name: str,
    *,
    precision: str = "default",
    width: int | None = None,
    kernel_size: int | None = None,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> tuple[TrainConfig, bool]:
    """``(config, half)`` of a bench config name; ``half``: set every ``theta`` to 0.5.

    ``extra``: further config overrides (``--set``), applied last."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    overrides: dict[str, Any] = dict(seed=seed)
    if precision != "default":
        overrides["precision"] = precision
    if width is not None:
        overrides["width"] = width
    if kernel_size is not None:
        overrides["kernel_size"] = kernel_size
    overrides.update(extra or {})
    if name == "t2":
        return get_preset("cifar10-t2", **overrides), False
    match = _CONFIG.match(name)
    if match is None:
        raise ValueError(
            f"bad config {name!r}: expected 't2' or "
            "'<group>-<N>-<full|partial|partial-half>[-sep]', e.g. 'se2-16-partial-sep'"
        )
    kind = match["kind"]
    preset = f"cifar10-{match['group']}-{'full' if kind == 'full' else 'partial'}"
    if preset not in PRESETS:
        raise ValueError(f"bad config {name!r}: there is no preset {preset!r}")
    if match["sep"]:
        overrides = dict(separable=True) | overrides
    config = get_preset(preset, num_elements=int(match["n"]), **overrides)
    return config, kind == "partial-half"


def _set_half(model: nnx.Module, name: str) -> None:
    thetas = [layer.distribution().get("theta") for _, layer in partial_layers(model)]
    thetas = [t for t in thetas if t is not None]
    if not thetas:
        raise ValueError(f"config {name!r}: the model has no theta to set to 0.5")
    for theta in thetas:
        theta[...] = jnp.full_like(theta[...], 0.5)


# ----------------------------------------------------------------------------- timing


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    if not cost or "flops" not in cost:
        raise ValueError("the backend gives no FLOP count in the compiled cost analysis")
    return float(cost["flops"])


def peak_mb(compiled) -> float | None:
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):  # backends without a memory analysis
        return None
    if m is None:
        return None
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return total / 2**20


def split_step(model: nnx.Module, config: TrainConfig, *, hold: bool = False):
    """``(step, state)``: the train step of ``model`` (put in train mode, with a fresh
    optimiser) as a function of the split ``state``, as the training loop runs it; with
    ``hold`` the distribution parameters stay at their start values (their update is computed,
    then discarded)."""
    model.train()
    optimizer = create_optimizer(config, model)
    graphdef, state = nnx.split((model, optimizer))
    kw = dict(objective=Objective.of(config))

    def step(state, batch, key):
        model, optimizer = nnx.merge(graphdef, state)
        # Copies (``tree.map``): the state's Variables are the model's own, updated in place.
        held = jax.tree.map(lambda v: v, nnx.state(model, DistributionParam)) if hold else None
        out = train_step(model, optimizer, batch, key, **kw)
        if hold:  # the sizes stay those the step was compiled for
            nnx.update(model, held)
        return nnx.state((model, optimizer)), out

    return step, state


def _make_step(config: TrainConfig, name: str, half: bool, hold: bool):
    """``(step, state, active sizes)`` of bench config ``name`` (:func:`split_step`)."""
    model = create_model(config)
    if half:
        _set_half(model, name)
    if hold:
        update_adaptive(model)
    sizes = active_elements(model)
    step, state = split_step(model, config, hold=hold)
    return step, state, sizes


def _compile(step, state, data, key, depthwise: str):
    """``(real_gflop, compiled step, compile seconds, convs, method)``."""
    with _depthwise_env("conv"):  # the step's work written as convs: its real multiply-adds
        as_convs = jax.jit(step, donate_argnums=0).trace(state, data, key)
        real_gflop = 2 * conv_macs(collect_convs(live_jaxpr(as_convs.jaxpr))) / 1e9
    jax.clear_caches()  # the method is read at trace time; JAX caches the inner step's trace
    start = time.perf_counter()
    with _depthwise_env(None if depthwise == "auto" else depthwise):
        method = depthwise_method()
        traced = jax.jit(step, donate_argnums=0).trace(state, data, key)
    step_c = traced.lower().compile()
    compile_s = time.perf_counter() - start
    return real_gflop, step_c, compile_s, collect_convs(live_jaxpr(traced.jaxpr)), method


def _time(step_c, floor_c, state, data, operands, step_keys, warmup: int):
    """Alternating step and floor calls: ``(step ms, floor ms, last step output)`` of the
    calls after ``warmup``."""
    step_ms, floor_ms = [], []
    for i, key in enumerate(step_keys):
        start = time.perf_counter()
        state, out = step_c(state, data, key)
        jax.block_until_ready((state, out))
        t_step = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(floor_c(operands))
        t_floor = time.perf_counter() - start
        if i >= warmup:
            step_ms.append(1e3 * t_step)
            floor_ms.append(1e3 * t_floor)
    return step_ms, floor_ms, out


def run_config(
    name: str,
    *,
    batch: int,
    steps: int,
    warmup: int,
    precision: str = "default",
    image_size: int = 32,
    width: int | None = None,
    kernel_size: int | None = None,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    execution: str = "masked",
    depthwise: str = "auto",
) -> dict[str, Any]:
    """Compiles and times the step and the floor of config ``name``; returns the result.

    ``depthwise``: the formulation of separable layers' depthwise convs (:data:`DEPTHWISES`).
    ``real_gflop`` is twice the multiply-adds of the step's convolutions written as convs
    (forward and backward, from the step traced with ``depthwise="conv"``, zero taps
    included; :func:`~experiments._floor.conv_macs`), whatever formulation runs; ``gflop`` is
    XLA's count for the compiled step."""
    for what, value, known in (
        ("execution", execution, EXECUTIONS),
        ("depthwise", depthwise, DEPTHWISES),
    ):
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; expected one of {known}")
    config, half = bench_config(
        name, precision=precision, width=width, kernel_size=kernel_size, seed=seed, extra=extra
    )
    step, state, sizes = _make_step(config, name, half, hold=execution == "adaptive")
    k_img, k_lab, k_conv, k_steps = jax.random.split(jax.random.key(seed), 4)
    spec = get_spec(config.dataset)
    data = {
        "image": jax.random.normal(k_img, (batch, image_size, image_size, spec.image_shape[-1])),
        "label": jax.random.randint(k_lab, (batch,), 0, spec.num_classes),
    }
    step_keys = [jax.random.fold_in(k_steps, i) for i in range(warmup + steps)]
    real_gflop, step_c, compile_s, convs, method = _compile(
        step, state, data, step_keys[0], depthwise
    )
    if not convs:
        raise ValueError(f"config {name!r}: no convolution found in the train step")
    operands = random_operands(k_conv, convs)
    start = time.perf_counter()
    floor_c = jax.jit(floor_fn(convs)).lower(operands).compile()
    floor_compile_s = time.perf_counter() - start
    step_ms, floor_ms, out = _time(step_c, floor_c, state, data, operands, step_keys, warmup)
    loss = float(out["loss_sum"]) / float(out["count"])
    if not np.isfinite(loss):
        raise ValueError(f"config {name!r}: the train step gave a non-finite loss {loss}")
    return dict(
        config=name,
        batch=batch,
        precision=precision,
        execution=execution,
        active_elements=list(sizes),
        image_size=image_size,
        preset_config=config.to_dict(),
        **_measures(step_ms, floor_ms, step_c, floor_c, convs, real_gflop),
        compile_s=compile_s,
        floor_compile_s=floor_compile_s,
        depthwise=method,
        last_loss=loss,
    )


def _measures(step_ms, floor_ms, step_c, floor_c, convs, real_gflop: float) -> dict[str, Any]:
    """The timings, memory and FLOP counts of a :func:`run_config` result."""
    med, floor = statistics.median(step_ms), statistics.median(floor_ms)
    device_peak = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    return dict(
        ms_per_step=med,
        floor_ms=floor,
        ratio=med / floor,
        min_ms=min(step_ms),
        max_ms=max(step_ms),
        step_ms=step_ms,
        floor_ms_all=floor_ms,
        peak_mem_mb=peak_mb(step_c),
        device_peak_mb_so_far=None if device_peak is None else device_peak / 2**20,
        gflop=_flops(step_c) / 1e9,
        real_gflop=real_gflop,
        real_gflops=real_gflop / (med / 1e3),
        floor_gflop=_flops(floor_c) / 1e9,
        num_convs=sum(c["times"] for c in convs),
        conv_shapes=[
            [list(c["lhs"].shape), list(c["rhs"].shape), str(c["lhs"].dtype), c["times"]]
            for c in convs
        ],
    )


class _depthwise_env:
    """Sets ``PGCNN_DEPTHWISE`` (read when a step is traced) for a ``with`` block; ``None``
    unsets it (the backend's default)."""

    def __init__(self, method: str | None):
        self.method = method

    def __enter__(self):
        self.saved = os.environ.pop("PGCNN_DEPTHWISE", None)
        if self.method is not None:
            os.environ["PGCNN_DEPTHWISE"] = self.method

    def __exit__(self, *exc):
        os.environ.pop("PGCNN_DEPTHWISE", None)
        if self.saved is not None:
            os.environ["PGCNN_DEPTHWISE"] = self.saved
