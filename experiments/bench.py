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
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
from absl import flags

from experiments._bench_step import (
    DEPTHWISES,
    EXECUTIONS,
    PRECISIONS,
    bench_config,
    collect_convs,
    live_jaxpr,
    run_config,
)
from experiments._flagset import parse_or_help, parse_set, print_error

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

LINE = (
    "pgcnn {config} batch={batch} ms_per_step={ms_per_step:.2f} floor_ms={floor_ms:.2f} "
    "ratio={ratio:.3f} min={min_ms:.2f} max={max_ms:.2f} peak_mem_mb={peak} "
    "compile_s={compile_s:.1f} gflop={gflop:.4g} real_gflop={real_gflop:.4g} "
    "real_gflops={real_gflops:.3g} depthwise={depthwise}"
)


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
