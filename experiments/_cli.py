"""Flags shared by the experiment CLIs and the preset resolution behind them.

A run is a preset (``--preset=NAME``, or one derived from ``--model/--group/--partial/--head``
for the CLI's dataset) with the flags given explicitly on top. ``--group=t2`` implies one
element, deterministic sampling and no partial equivariance; ``--group=mirror`` two elements,
deterministic. Bad input, a diverged run, a workdir another process trains in and an
unreadable checkpoint end the program with a one-line ``error: ...`` on stderr and exit
status 1.

Each CLI adopts these flags as its own key flags (``flags.adopt_module_key_flags``), so its
``--help`` lists them.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
from absl import flags, logging

from experiments._flagset import parse_set, print_error
from experiments.configs import CLI_OF_DATASET, PRESETS, check_available, with_overrides
from pgcnn_jax.data import describe_source
from pgcnn_jax.groups import GROUP_NAMES, get_group
from pgcnn_jax.models import HEADS, MODEL_NAMES
from pgcnn_jax.train import (
    RunDir,
    TrainConfig,
    TrainingDiverged,
    WorkdirLocked,
    check_devices,
    train_and_evaluate,
)

FLAGS = flags.FLAGS

_PRESET = flags.DEFINE_string("preset", None, "Preset name (experiments/configs.py).")
_GROUP = flags.DEFINE_string("group", None, f"Base group: {', '.join(GROUP_NAMES)}.")
_ELEMS = flags.DEFINE_integer("elems", None, "Number N of sampled group elements.")
flags.DEFINE_bool("partial", True, "Partial equivariance (learned subsets); --nopartial: full.")
_MODEL = flags.DEFINE_string("model", None, f"Architecture: {', '.join(MODEL_NAMES)}.")
_HEAD = flags.DEFINE_string("head", None, f"CKResNet head: {', '.join(HEADS)}.")
_KERNEL = flags.DEFINE_string("kernel", None, "Kernel net: siren, mlp_relu, ..., magnet.")
_SEPARABLE = flags.DEFINE_bool(
    "separable",
    None,
    "Separable group convs (a 1x1 mixing over elements x channels, then one rotated depthwise "
    "spatial kernel per element; Knigge et al. 2022); --noseparable: joint kernels "
    "(default: the preset's).",
)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Training epochs.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch size.")
_LR = flags.DEFINE_float("lr", None, "Learning rate.")
_LR_PROBS = flags.DEFINE_float("lr_probs", None, "Learning rate of theta / mirror (0: lr).")
_WD = flags.DEFINE_float("weight_decay", None, "Kernel-norm penalty weight (REFERENCE 5.1).")
_MONO = flags.DEFINE_float("monotonic", None, "Monotonic-decay penalty weight (CKResNet).")
_SCHED = flags.DEFINE_string("scheduler", None, "cosine or constant.")
_SEED = flags.DEFINE_integer("seed", None, "Random seed.")
_WIDTH = flags.DEFINE_integer("width", None, "Base channel count C.")
_KHIDDEN = flags.DEFINE_integer("kernel_hidden", None, "Hidden units of the kernel net.")
_KSIZE = flags.DEFINE_integer("kernel_size", None, "Odd kernel size.")
_PRECISION = flags.DEFINE_string(
    "precision", None, "Conv precision: float32, tf32 or bfloat16 (default: lax's default)."
)
_EXECUTION = flags.DEFINE_string(
    "execution",
    None,
    "Partial layers: masked (N slots, default) or adaptive (exactly N' slots; the step "
    "compiles once per tuple of sizes).",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<name>).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
_DATA = flags.DEFINE_string("data", None, "Data source: tfds (default) or npz:PATH.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "Stop after this many steps in total.")
_CKPT = flags.DEFINE_integer("checkpoint_every_steps", None, "Mid-epoch checkpoint period.")
_PER_EXAMPLE = flags.DEFINE_bool(
    "sample_per_batch_element",
    None,
    "Random partial layers sample their elements per batch element (the MNIST6-180 SE2 "
    "preset, as the release; ~10x slower on CPU); --nosample_per_batch_element: one sample "
    "shared by the batch.",
)
_EVAL_SAMPLES = flags.DEFINE_integer(
    "eval_samples",
    None,
    "K evaluation passes (validation and test): 1 = one stochastic pass like the release; "
    "K > 1 = per-example samples, mean softmax of K passes.",
)
_DEVICES = flags.DEFINE_integer(
    "devices",
    None,
    "Devices the batch is split over (data parallel; default: all local devices). The batch "
    "size must be a multiple of it.",
)
_SET = flags.DEFINE_multi_string(
    "set", [], "Any other config field as KEY=VALUE (JSON value), e.g. --set=dropout=0.1."
)
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")

# flag -> config field, for the flags that map one to one.
_DIRECT = (
    (_ELEMS, "num_elements"),
    (_MODEL, "model"),
    (_HEAD, "head"),
    (_KERNEL, "kernel"),
    (_SEPARABLE, "separable"),
    (_EPOCHS, "epochs"),
    (_BATCH, "batch_size"),
    (_LR, "lr"),
    (_LR_PROBS, "lr_probs"),
    (_WD, "weight_decay"),
    (_MONO, "monotonic"),
    (_SCHED, "scheduler"),
    (_SEED, "seed"),
    (_WIDTH, "width"),
    (_KHIDDEN, "kernel_hidden"),
    (_KSIZE, "kernel_size"),
    (_PRECISION, "precision"),
    (_EXECUTION, "execution"),
    (_DATA_DIR, "data_dir"),
    (_DATA, "data"),
    (_MAX_STEPS, "max_steps"),
    (_CKPT, "checkpoint_every_steps"),
    (_PER_EXAMPLE, "sample_per_batch_element"),
    (_EVAL_SAMPLES, "eval_samples"),
    (_DEVICES, "devices"),
)


def say(msg: str, notes: list[str] | None = None) -> None:
    """Prints ``[pgcnn] msg`` on stderr, or appends ``msg`` to ``notes`` (printed later)."""
    if notes is not None:
        notes.append(msg)
    else:
        print(f"[pgcnn] {msg}", file=sys.stderr, flush=True)


def _variant(
    model: str, group: str, partial: bool, head: str | None, separable: bool = False
) -> str:
    """Preset suffix of an architecture choice (see experiments/configs.py); ``-sep`` ends a
    separable one (presets: ``<group>-partial-sep``). A trivial group (only the identity, e.g.
    ``t2``) has no partial / full variants: its presets are named after the group alone."""
    kind = "partial" if partial else "full"
    trivial = get_group(group).trivial
    if model in ("gcnn", "augerino_gcnn"):
        if trivial:
            variant = f"gcnn-{group}"
        else:
            variant = f"gcnn-{group}-{'augerino' if model == 'augerino_gcnn' else kind}"
    elif trivial:
        variant = group
    elif model == "augerino_ckresnet":
        variant = f"{group}-augerino"
    else:
        variant = f"{group}-" + {"mlp": "mlp", "t2": "t2head"}.get(head or "pool", kind)
    return f"{variant}-sep" if separable else variant


def _stand_in_groups() -> tuple[str, ...]:
    """The groups whose presets stand in for a group without one of the asked architecture
    (the same layout with that group's name replaced): every registered group that is not
    trivial, in :data:`GROUP_NAMES` order."""
    return tuple(g for g in GROUP_NAMES if not get_group(g).trivial)


# The group a CLI run takes without --group: SE2, but E2 for MNIST6-M (a mirror task).
_DEFAULT_GROUP = {"mnist6_m": "e2"}


def derive_preset(dataset: str, notes: list[str] | None = None) -> str:
    """The preset matching ``dataset`` and the architecture flags, or the closest one
    (``notes``: see :func:`say`)."""
    group = _GROUP.value or _DEFAULT_GROUP.get(dataset, "se2")
    partial = FLAGS.partial
    if not FLAGS["partial"].present:
        implied = get_group(group).implied_settings().partial
        partial = partial if implied is None else implied
    separable = bool(_SEPARABLE.value)
    variant = _variant(_MODEL.value or "ckresnet", group, partial, _HEAD.value, separable)
    variants = [variant]
    if variant.endswith("-sep"):  # no separable preset: the joint one, --separable on top
        variants.append(variant.removesuffix("-sep"))
    candidates = [f"{dataset}-{v}" for v in variants]
    for v in variants:
        for g in _stand_in_groups():  # the same architecture with another group
            candidates.append(f"{dataset}-{v.replace(f'{group}-', f'{g}-', 1)}")
    candidates.append(f"{dataset}-{_DEFAULT_GROUP.get(dataset, 'se2')}-partial")
    for name in candidates:
        if name in PRESETS:
            if name != candidates[0]:
                say(f"no preset {candidates[0]!r}: starting from {name!r} with the flags", notes)
            return name
    raise ValueError(f"no preset for dataset {dataset!r}")


def resolve(
    datasets: Sequence[str],
    dataset: str | None,
    notes: list[str] | None = None,
    **extra: Any,
) -> tuple[str, TrainConfig]:
    """``(run name, config)`` from the flags, for a CLI serving ``datasets``.

    ``dataset``: the CLI's dataset flag value when given explicitly, else ``None``.
    ``notes``: collects the messages about the resolution instead of printing them.
    ``extra``: further explicit overrides of the CLI (``augment``, ``rot_interval``).
    """
    if dataset is not None and dataset not in datasets:
        raise ValueError(f"unknown dataset {dataset!r}; this CLI runs {', '.join(datasets)}")
    if _GROUP.value is not None and _GROUP.value not in GROUP_NAMES:
        raise ValueError(f"unknown group {_GROUP.value!r}; expected one of {GROUP_NAMES}")
    if _MODEL.value is not None and _MODEL.value not in MODEL_NAMES:
        raise ValueError(f"unknown model {_MODEL.value!r}; expected one of {MODEL_NAMES}")
    if _HEAD.value is not None and _HEAD.value not in HEADS:
        raise ValueError(f"unknown head {_HEAD.value!r}; expected one of {HEADS}")
    if _PRESET.value is not None:
        name = _PRESET.value
        if name not in PRESETS:
            check_available(name)  # a known preset whose group is not registered: say so
            raise ValueError(
                f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
            )
        if PRESETS[name].config.dataset not in datasets:
            cli = CLI_OF_DATASET[PRESETS[name].config.dataset]
            raise ValueError(f"preset {name!r} is run by python -m experiments.{cli}")
    else:
        name = derive_preset(dataset or datasets[0], notes)
    base = PRESETS[name].config
    overrides: dict[str, Any] = {}
    if dataset is not None and dataset != base.dataset:
        overrides["dataset"] = dataset
    if _GROUP.value is not None:
        overrides["group"] = _GROUP.value
    if FLAGS["partial"].present:
        overrides["partial"] = FLAGS.partial
    for flag, field in _DIRECT:
        if flag.value is not None:
            overrides[field] = flag.value
    overrides.update(extra)
    overrides.update(parse_set(FLAGS.set))
    config = with_overrides(base, **overrides)
    check_devices(config.devices, config.batch_size)  # more than there are: say so now
    implied = get_group(_GROUP.value).implied_settings().as_dict() if _GROUP.value else {}
    if implied:
        fixed = ", ".join(f"{k}={v}" for k, v in implied.items())
        say(f"group {_GROUP.value} implies {fixed}", notes)
    if _PRESET.value is None:
        m = config.model
        name = f"{config.dataset}-{_variant(m.model, m.group, m.partial, m.head, m.separable)}"
    else:
        name = name.replace(base.dataset, config.dataset, 1)
        if config.model.group != base.model.group:
            name = f"{name}-{config.model.group}"
        if config.model.separable != base.model.separable:
            name = f"{name}-{'sep' if config.model.separable else 'joint'}"
    if config.model.num_elements != base.model.num_elements:
        name = f"{name}-n{config.model.num_elements}"
    if config.seed:
        name = f"{name}-seed{config.seed}"
    return name, config


def run(datasets: Sequence[str], dataset: str | None = None, **extra: Any) -> dict:
    """Resolves the flags, prints what will be downloaded (the first line), trains, prints a
    summary. Nothing is written to the workdir before the data are loaded."""
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    notes: list[str] = []
    name, config = resolve(datasets, dataset, notes, **extra)
    workdir = _WORKDIR.value or os.path.join("runs", name)
    # Locked and checked once: a second process on this workdir stops here, at once.
    with RunDir(workdir).open(config) as run_dir:
        say(describe_source(config.dataset, config.data_dir, config.data))
        for note in notes:
            say(note)
        say(f"run {name!r} in {workdir}")
        if config.model.sample_per_batch_element and jax.default_backend() == "cpu":
            say(
                "partial layers sample their elements per batch element (as the release's "
                "command); on CPU that is about 10x slower than one sample shared by the batch: "
                "--nosample_per_batch_element turns it off"
            )
        results = train_and_evaluate(config, run_dir, progress=FLAGS.progress)
    keys = ("test_accuracy", "best_val_accuracy", "best_epoch", "epochs", "steps", "stop_reason")
    print(json.dumps({"run": name, "workdir": workdir} | {k: results[k] for k in keys}))
    return results


def guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """Wraps an absl ``main``: extra arguments, ``ValueError``, ``TrainingDiverged`` and
    ``WorkdirLocked`` become a one-line ``error: ...`` on stderr and exit status 1 (no
    traceback)."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> Any:
        try:
            if len(argv) > 1:
                raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
            return main(argv)
        except (ValueError, TrainingDiverged, WorkdirLocked) as err:
            print_error(err)
            raise SystemExit(1) from None

    return wrapped
