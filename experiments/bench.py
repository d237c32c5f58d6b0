"""Benchmark: the train step of the CIFAR-10 CKResNet against its convolution floor.

    python -m experiments.bench --configs=t2,se2-8-partial --batch=8 --steps=3 --warmup=1

Configs are ``t2`` and ``<group>-<N>-<full|partial|partial-half>[-sep]`` (``se2-16-partial``,
``e2-16-full``, ``se2-16-partial-sep``, ...): the CIFAR-10 CKResNet preset
``cifar10-<group>-<full|partial>`` (REFERENCE 7 row 17 and its siblings) with ``N`` elements;
``partial-half`` sets every ``theta`` to 0.5; ``-sep`` renders the group convs separably
(``separable=True``, as the ``cifar10-<group>-partial-sep`` presets).
Random images and labels are jit arguments.

For every config, in one process, it compiles and times

* the **step**: the full train step (forward, backward, optimiser update) through the public
  :func:`pgcnn_jax.train.train_step`, run on the split state under one ``jax.jit`` with the
  state donated, as the training loop runs it;
* the **floor**: every ``conv_general_dilated`` of that step (forward convs and the transposed
  convs of the backward pass, read from the step's jaxpr, with their exact shapes, dtypes,
  precision and dimension numbers) run alone on random operands in one jitted function (for
  ``-sep``: the 1x1 mixing convs and the depthwise convs, ``feature_group_count`` included).

``--execution=adaptive`` (DESIGN 4) runs every partial layer with a learned ``theta`` on exactly
``N'`` slots, read from the thetas the config starts with (``partial-half``: ``N' = N / 2``);
so that every timed step runs those sizes, the step keeps the distribution parameters at their
start values in this mode (their update is computed, then discarded). ``masked`` (default) runs
every layer on ``N`` slots whatever ``theta``.

Step and floor calls alternate (warm-up first, ``jax.block_until_ready`` after each call), so a
machine shared with other work slows both alike. One line per config::

    pgcnn <config> batch=<B> ms_per_step=<median> floor_ms=<median> ratio=<step/floor>
        min=<step min> max=<step max> peak_mem_mb=<or na> compile_s=<step> gflop=<step>

(on one line). ``peak_mem_mb`` is the compiled step's arguments + outputs + temporaries - donated
aliases (XLA's memory analysis; ``na`` where the backend has none); ``gflop`` comes from the
compiled step's cost analysis; ``real_gflop`` is twice the multiply-adds of the step's
convolutions as written (forward and backward; the depthwise work of separable layers counted
as the grouped convs it replaces, whatever formulation ``--depthwise`` runs), and
``real_gflops`` that count over the median step time. ``--json=PATH`` writes the header and
every result (with the floor's GFLOP, the conv shapes and the device's own peak-memory counter
where it has one), rewritten after each config.

``--depthwise=conv|taps`` picks the depthwise formulation of separable layers (default
``auto``: shifted-tap multiply-adds on CPU, cuDNN's grouped convs elsewhere); with ``taps``
the floor holds the separable step's 1x1 convs only (its depthwise work is no conv).

Flags use a private ``absl.flags.FlagValues`` (``--precision`` and ``--devices`` are also flags
of the training CLIs), so this module can be imported next to them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from experiments._flagset import parse_or_help, print_error
from experiments._floor import collect_convs, conv_macs, floor_fn, live_jaxpr, random_operands
from experiments.configs import PRESETS, get_preset
from pgcnn_jax.data import get_spec
from pgcnn_jax.nn import (
    CONV_PRECISIONS,
    DEPTHWISE_METHODS,
    DistributionParam,
    GroupConv,
    active_elements,
    depthwise_method,
    update_adaptive,
)
from pgcnn_jax.train import Objective, TrainConfig, create_model, create_optimizer, train_step

__all__ = [
    "EXECUTIONS",
    "PRECISIONS",
    "bench_config",
    "collect_convs",
    "format_line",
    "live_jaxpr",
    "main",
    "run_config",
]

_CONFIG = re.compile(
    r"^(?P<group>[a-z0-9]+)-(?P<n>[0-9]+)-(?P<kind>full|partial|partial-half)(?P<sep>-sep)?$"
)
#: ``--precision`` values: ``default`` is ``lax``'s default (what training uses unless told).
PRECISIONS = ("default", *(p for p in CONV_PRECISIONS if p is not None))
EXECUTIONS = ("masked", "adaptive")
LINE = (
    "pgcnn {config} batch={batch} ms_per_step={ms_per_step:.2f} floor_ms={floor_ms:.2f} "
    "ratio={ratio:.3f} min={min_ms:.2f} max={max_ms:.2f} peak_mem_mb={peak} "
    "compile_s={compile_s:.1f} gflop={gflop:.4g} real_gflop={real_gflop:.4g} "
    "real_gflops={real_gflops:.3g} depthwise={depthwise}"
)
#: ``--depthwise`` values: ``auto`` is the backend's default
#: (:func:`pgcnn_jax.nn.depthwise_method`).
DEPTHWISES = ("auto", *DEPTHWISE_METHODS)


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    kw = dict(flag_values=fv)
    flags.DEFINE_list(
        "configs", ["t2", "se2-16-partial"],
        "t2 and/or <group>-<N>-<full|partial|partial-half>[-sep] (-sep: separable group convs).",
        **kw,
    )  # fmt: skip
    flags.DEFINE_integer("batch", 64, "Batch size.", **kw)
    flags.DEFINE_integer("steps", 10, "Timed steps (the median is reported).", **kw)
    flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.", **kw)
    flags.DEFINE_string("precision", "default", f"Conv precision: {', '.join(PRECISIONS)}.", **kw)
    flags.DEFINE_string("execution", "masked", f"Partial execution: {', '.join(EXECUTIONS)}.", **kw)
    flags.DEFINE_integer("devices", 1, "Devices to run the step on (one for now).", **kw)
    flags.DEFINE_string("json", None, "Also write the results to this JSON file.", **kw)
    flags.DEFINE_integer("image_size", 32, "Side of the random square images.", **kw)
    flags.DEFINE_integer("width", None, "Override the preset's base width (small runs).", **kw)
    flags.DEFINE_integer("kernel_size", None, "Override the preset's kernel size.", **kw)
    flags.DEFINE_multi_string(
        "set", [], "Any other config field as KEY=VALUE (JSON value), e.g. --set=num_blocks=1.",
        **kw,
    )  # fmt: skip
    flags.DEFINE_integer("seed", 0, "Seed of the model and the random data.", **kw)
    flags.DEFINE_string(
        "depthwise", "auto",
        f"Depthwise conv of separable layers: {', '.join(DEPTHWISES)} (auto: taps on CPU, conv "
        "elsewhere).", **kw,
    )  # fmt: skip
    return fv


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
    thetas = [m.theta for _, m in nnx.iter_graph(model) if isinstance(m, GroupConv)]
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


def _peak_mb(compiled) -> float | None:
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
    if execution not in EXECUTIONS:
        raise ValueError(f"unknown execution {execution!r}; expected one of {EXECUTIONS}")
    if depthwise not in DEPTHWISES:
        raise ValueError(f"unknown depthwise {depthwise!r}; expected one of {DEPTHWISES}")
    config, half = bench_config(
        name, precision=precision, width=width, kernel_size=kernel_size, seed=seed, extra=extra
    )
    model = create_model(config)
    if half:
        _set_half(model, name)
    hold = execution == "adaptive"
    if hold:
        update_adaptive(model)
    sizes = active_elements(model)
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

    key = jax.random.key(seed)
    k_img, k_lab, k_conv, k_steps = jax.random.split(key, 4)
    spec = get_spec(config.dataset)
    data = {
        "image": jax.random.normal(k_img, (batch, image_size, image_size, spec.image_shape[-1])),
        "label": jax.random.randint(k_lab, (batch,), 0, spec.num_classes),
    }
    step_keys = [jax.random.fold_in(k_steps, i) for i in range(warmup + steps)]
    with _depthwise_env("conv"):  # the step's work written as convs: its real multiply-adds
        as_convs = jax.jit(step, donate_argnums=0).trace(state, data, step_keys[0])
        real_gflop = 2 * conv_macs(collect_convs(live_jaxpr(as_convs.jaxpr))) / 1e9
    jax.clear_caches()  # the method is read at trace time; JAX caches the inner step's trace
    start = time.perf_counter()
    with _depthwise_env(None if depthwise == "auto" else depthwise):
        method = depthwise_method()
        traced = jax.jit(step, donate_argnums=0).trace(state, data, step_keys[0])
    step_c = traced.lower().compile()
    compile_s = time.perf_counter() - start
    convs = collect_convs(live_jaxpr(traced.jaxpr))
    if not convs:
        raise ValueError(f"config {name!r}: no convolution found in the train step")
    operands = random_operands(k_conv, convs)

    start = time.perf_counter()
    floor_c = jax.jit(floor_fn(convs)).lower(operands).compile()
    floor_compile_s = time.perf_counter() - start
    step_ms, floor_ms = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, out = step_c(state, data, step_keys[i])
        jax.block_until_ready((state, out))
        t_step = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(floor_c(operands))
        t_floor = time.perf_counter() - start
        if i >= warmup:
            step_ms.append(1e3 * t_step)
            floor_ms.append(1e3 * t_floor)
    loss = float(out["loss_sum"]) / float(out["count"])
    if not np.isfinite(loss):
        raise ValueError(f"config {name!r}: the train step gave a non-finite loss {loss}")
    med, floor = statistics.median(step_ms), statistics.median(floor_ms)
    stats = jax.local_devices()[0].memory_stats() or {}
    device_peak = stats.get("peak_bytes_in_use")
    return dict(
        config=name,
        batch=batch,
        precision=precision,
        execution=execution,
        active_elements=list(sizes),
        image_size=image_size,
        preset_config=config.to_dict(),
        ms_per_step=med,
        floor_ms=floor,
        ratio=med / floor,
        min_ms=min(step_ms),
        max_ms=max(step_ms),
        step_ms=step_ms,
        floor_ms_all=floor_ms,
        peak_mem_mb=_peak_mb(step_c),
        device_peak_mb_so_far=None if device_peak is None else device_peak / 2**20,
        compile_s=compile_s,
        floor_compile_s=floor_compile_s,
        gflop=_flops(step_c) / 1e9,
        real_gflop=real_gflop,
        real_gflops=real_gflop / (med / 1e3),
        depthwise=method,
        floor_gflop=_flops(floor_c) / 1e9,
        num_convs=sum(c["times"] for c in convs),
        conv_shapes=[
            [list(c["lhs"].shape), list(c["rhs"].shape), str(c["lhs"].dtype), c["times"]]
            for c in convs
        ],
        last_loss=loss,
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


def format_line(result: dict[str, Any]) -> str:
    """The one-line summary of a :func:`run_config` result."""
    peak = result["peak_mem_mb"]
    return LINE.format(**(result | dict(peak="na" if peak is None else f"{peak:.0f}")))


# ----------------------------------------------------------------------------- the CLI


def _header(argv: Sequence[str], fv: flags.FlagValues) -> dict[str, Any]:
    import flax

    dev = jax.local_devices()[0]
    return dict(
        device_kind=dev.device_kind,
        platform=dev.platform,
        local_devices=jax.local_device_count(),
        devices=fv.devices,
        jax=jax.__version__,
        flax=flax.__version__,
        precision=fv.precision,
        execution=fv.execution,
        command="python -m experiments.bench " + shlex.join(list(argv[1:])),
        date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["KEY=JSON", ...]`` -> overrides (JSON lists become tuples; non-JSON stays a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def _check(fv: flags.FlagValues) -> None:
    for name in ("batch", "steps", "image_size"):
        if fv[name].value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {fv[name].value}")
    if fv.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {fv.warmup}")
    if not fv.configs:
        raise ValueError("--configs is empty")
    if fv.precision not in PRECISIONS:
        raise ValueError(f"unknown --precision {fv.precision!r}; expected one of {PRECISIONS}")
    if fv.execution not in EXECUTIONS:
        raise ValueError(f"unknown --execution {fv.execution!r}; expected one of {EXECUTIONS}")
    if fv.depthwise not in DEPTHWISES:
        raise ValueError(f"unknown --depthwise {fv.depthwise!r}; expected one of {DEPTHWISES}")
    local = jax.local_device_count()
    if fv.devices < 1 or fv.devices > local:
        raise ValueError(f"--devices={fv.devices}: this host has {local} local device(s)")
    if fv.devices > 1:
        raise ValueError(
            f"--devices={fv.devices}: the bench times the step on one device (the training "
            "loop shards its step over --devices; the bench does not yet); use --devices=1"
        )
    for name in fv.configs:  # every name and override is checked before anything compiles
        bench_config(
            name,
            precision=fv.precision,
            width=fv.width,
            kernel_size=fv.kernel_size,
            extra=parse_set(fv.set),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1 on bad flags)."""
    argv = list(sys.argv if argv is None else argv)
    fv = _flag_values()
    try:
        if not parse_or_help(fv, argv, __doc__):
            return 0
        _check(fv)
    except (ValueError, flags.Error) as err:
        print_error(err)
        return 1
    header = _header(argv, fv)
    print(
        f"# pgcnn bench: device={header['device_kind']} ({header['platform']}, "
        f"{header['local_devices']} local) jax={header['jax']} flax={header['flax']} "
        f"precision={fv.precision} execution={fv.execution} devices={fv.devices}",
        flush=True,
    )
    print(f"# command: {header['command']}", flush=True)
    results = []
    for name in fv.configs:
        result = run_config(
            name,
            batch=fv.batch,
            steps=fv.steps,
            warmup=fv.warmup,
            precision=fv.precision,
            image_size=fv.image_size,
            width=fv.width,
            kernel_size=fv.kernel_size,
            seed=fv.seed,
            extra=parse_set(fv.set),
            execution=fv.execution,
            depthwise=fv.depthwise,
        )
        results.append(result)
        print(format_line(result), flush=True)
        if fv.json:
            os.makedirs(os.path.dirname(os.path.abspath(fv.json)), exist_ok=True)
            with open(fv.json, "w") as f:
                json.dump(dict(header=header, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
