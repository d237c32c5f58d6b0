"""Per-batch-element sampling: peak memory and time of the train step (issue 8 item 6).

    python -m experiments.bench_per_example --batch=16 --steps=5

Three variants of one preset (default ``mnist6_180-se2-partial``, the MNIST6-180 SE2 run that
samples per batch element), each the full train step (forward, backward, Adam) under one
``jax.jit`` with the state donated, like :mod:`experiments.bench`:

* ``shared``: one element set for the whole batch (``sample_per_batch_element=False``);
* ``batched``: per-example elements, all ``B`` kernels rendered before the convolutions (the
  rendering before issue 8 item 6, ``per_example_render="batched"``);
* ``chunked``: per-example elements, kernels rendered and applied a chunk of examples at a time
  inside a rematerialised ``lax.map`` (the default now).

Peak memory is XLA's memory analysis of the compiled step (arguments + outputs + temporaries -
donated aliases); the step times alternate between the variants (one step of each in turn), so
load from other processes hits all alike. One line per variant::

    per_example <variant> batch=<B> ms_per_step=<median> min=<> max=<> peak_mem_mb=<>
        temp_mb=<> compile_s=<>

(No FLOP count: XLA's cost analysis counts the body of a ``lax.map`` once, not per example.)
"""

from __future__ import annotations

import shlex
import statistics
import sys
import time
from collections.abc import Sequence

import jax
from absl import flags
from flax import nnx

from experiments._bench_step import peak_mb, split_step
from experiments.configs import get_preset
from pgcnn_jax.data import get_spec
from pgcnn_jax.nn import GroupConv, LiftingConv, PointwiseGroupConv
from pgcnn_jax.train import create_model

VARIANTS = ("shared", "batched", "chunked")


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    kw = dict(flag_values=fv)
    flags.DEFINE_string("preset", "mnist6_180-se2-partial", "Preset to measure.", **kw)
    flags.DEFINE_integer("batch", 16, "Batch size.", **kw)
    flags.DEFINE_integer("steps", 5, "Timed steps per variant (median reported).", **kw)
    flags.DEFINE_integer("warmup", 1, "Untimed steps per variant after compilation.", **kw)
    flags.DEFINE_list("variants", list(VARIANTS), f"Any of {', '.join(VARIANTS)}.", **kw)
    flags.DEFINE_integer("seed", 0, "Seed of the model and the data.", **kw)
    return fv


def _compiled(preset: str, variant: str, batch: int, seed: int):
    config = get_preset(preset, seed=seed, sample_per_batch_element=variant != "shared")
    model = create_model(config)
    if variant == "batched":
        for _, node in nnx.iter_graph(model):
            if isinstance(node, LiftingConv | GroupConv | PointwiseGroupConv):
                node.per_example_render = "batched"
    step, state = split_step(model, config)
    spec = get_spec(config.dataset)
    k_img, k_lab = jax.random.split(jax.random.key(seed))
    data = {
        "image": jax.random.normal(k_img, (batch, *spec.image_shape)),
        "label": jax.random.randint(k_lab, (batch,), 0, spec.num_classes),
    }
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, data, jax.random.key(0)).compile()
    return compiled, state, data, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    fv = _flag_values()
    fv(argv)
    for v in fv.variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; expected some of {VARIANTS}")
    print(f"# device={jax.devices()[0].device_kind} jax={jax.__version__}", flush=True)
    print("# command: python -m experiments.bench_per_example " + shlex.join(argv[1:]))
    runs = {v: _compiled(fv.preset, v, fv.batch, fv.seed) for v in fv.variants}
    states = {v: r[1] for v, r in runs.items()}
    times: dict[str, list[float]] = {v: [] for v in runs}
    for i in range(fv.warmup + fv.steps):
        for v, (compiled, _, data, _) in runs.items():
            start = time.perf_counter()
            states[v], out = compiled(states[v], data, jax.random.key(i))
            jax.block_until_ready((states[v], out))
            if i >= fv.warmup:
                times[v].append(1e3 * (time.perf_counter() - start))
    for v, (compiled, _, _, compile_s) in runs.items():
        t = times[v]
        mem = compiled.memory_analysis()
        temp = "na" if mem is None else f"{mem.temp_size_in_bytes / 2**20:.0f}"
        print(
            f"per_example {v} batch={fv.batch} ms_per_step={statistics.median(t):.1f} "
            f"min={min(t):.1f} max={max(t):.1f} peak_mem_mb={peak_mb(compiled):.0f} "
            f"temp_mb={temp} compile_s={compile_s:.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
