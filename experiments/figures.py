"""Figures of the paper from trained run directories (Figures 4, 5/6 and equivariance).

    python -m experiments.figures --fig=4 --run=runs/fig4 --run=runs/mnist6_180-se2-full
    python -m experiments.figures --fig=subsets --run=runs/cifar10-se2-partial
    python -m experiments.figures --fig=equivariance --run=RUN_FULL --run=RUN_PARTIAL --step=5

``--fig=4``: one test "6" (the ``--index``-th test image of class 0 of MNIST6) rotated from
-180 to 180 degrees in 1-degree steps (counter-clockwise on screen, like torchvision's
``TF.rotate`` in the paper's notebook; bilinear, the corners filled with black), and the
probability each run gives class 0 ("6"). ``--fig=subsets``: per layer the rotation interval
``[-180 theta, 180 theta]`` each run keeps (paper Figure 5) and, for groups with mirrors, the
probability of keeping the mirrored elements (Figure 6) and, for groups with further axes
(``sim2``'s scales), the fraction of each axis kept. ``--fig=equivariance``: per layer the
relative change of its group-pooled output when ``--num_images`` test images are rotated by
0, ``--step``, ..., 360 degrees (:func:`pgcnn_jax.analysis.equivariance_profile`).

Each writes ``<fig>.png`` and ``<fig>.json`` (``fig4``, ``subsets``, ``equivariance``) into
``--out`` (default ``<first run>/figures``). Models are restored with
:func:`pgcnn_jax.train.load_run` (``--which=best`` or ``latest``); test images come from the
run's own data source unless ``--data`` / ``--data_dir`` say otherwise. Bad input ends with a
one-line ``error: ...`` and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags, logging

from experiments._figures_plot import (
    FIG4_ANGLES,
    check_equivariance,
    check_fig4,
    figure4,
    figure_equivariance,
    figure_subsets,
    run_label,
)
from experiments._flagset import parse_or_help, print_error
from pgcnn_jax.train import CHECKPOINT_KINDS, load_run, load_run_config

__all__ = ["FIGURES", "FIG4_ANGLES", "figure_subsets", "main", "run", "run_label"]

FIGURES = ("4", "subsets", "equivariance")
_FILES = {"4": "fig4", "subsets": "subsets", "equivariance": "equivariance"}


def _write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- entry points
def _save(fig, record: dict, out: str, which: str) -> dict:
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, _FILES[which])
    fig.savefig(f"{base}.png", dpi=150)
    _write_json(f"{base}.json", record)
    return {"png": f"{base}.png", "json": f"{base}.json", "record": record}


def run(
    fig: str,
    runs: Sequence[str],
    out: str | None = None,
    *,
    which: str = "best",
    index: int = 0,
    step: float = 5.0,
    num_images: int = 4,
    seed: int = 0,
    batch: int = 64,
    data: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Makes figure ``fig`` (:data:`FIGURES`) from the run directories ``runs``.

    Returns ``{"png": path, "json": path, "record": the JSON written}``; ``ValueError`` on bad
    input (unknown figure, no runs, a directory without config or checkpoint, ...).
    """
    fig = str(fig)
    if fig not in FIGURES:
        raise ValueError(f"unknown figure {fig!r}; expected one of {', '.join(FIGURES)}")
    runs = [os.fspath(r) for r in runs]
    if not runs:
        raise ValueError("at least one run directory is needed (--run=DIR)")
    if which not in CHECKPOINT_KINDS:
        raise ValueError(f"--which must be one of {CHECKPOINT_KINDS}, got {which!r}")
    out = os.path.join(runs[0], "figures") if out is None else os.fspath(out)
    # Cheap checks first: configs and flags before any model is built.
    configs = [load_run_config(r) for r in runs]
    if fig == "4":
        check_fig4(runs, configs, index)
    elif fig == "equivariance":
        check_equivariance(step, num_images)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {batch!r}")
    loaded = [load_run(r, which=which) for r in runs]
    models, configs = [m for m, _ in loaded], [c for _, c in loaded]
    if fig == "4":
        figure, record = figure4(
            runs, models, configs, index=index, seed=seed, batch=batch, data=data,
            data_dir=data_dir,
        )  # fmt: skip
    elif fig == "subsets":
        figure, record = figure_subsets(runs, models, configs, seed=seed)
    else:
        figure, record = figure_equivariance(
            runs, models, configs, step=step, num_images=num_images, seed=seed, data=data,
            data_dir=data_dir,
        )  # fmt: skip
    record["checkpoint"] = which
    return _save(figure, record, out, fig)


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    kw = dict(flag_values=fv)
    flags.DEFINE_enum("fig", None, list(FIGURES), "Figure to make.", **kw)
    flags.DEFINE_multi_string("run", [], "Run directory (repeatable).", **kw)
    flags.DEFINE_string("out", None, "Output directory (default <first run>/figures).", **kw)
    flags.DEFINE_enum("which", "best", list(CHECKPOINT_KINDS), "Checkpoint to restore.", **kw)
    flags.DEFINE_integer("index", 0, "--fig=4: which class-0 test image (0 = the first).", **kw)
    flags.DEFINE_float("step", 5.0, "--fig=equivariance: angle step in degrees.", **kw)
    flags.DEFINE_integer("num_images", 4, "--fig=equivariance: test images.", **kw)
    flags.DEFINE_integer("seed", 0, "Sampling seed of the model's forward passes.", **kw)
    flags.DEFINE_integer("batch", 64, "--fig=4: rotated copies per forward.", **kw)
    flags.DEFINE_string("data", None, "Data source override (npz:PATH or tfds).", **kw)
    flags.DEFINE_string("data_dir", None, "TFDS data directory override.", **kw)
    return fv


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1 on bad input)."""
    fv = _flag_values()
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    try:
        if not parse_or_help(fv, argv, __doc__):
            return 0
        if fv.fig is None:
            raise ValueError(f"--fig is required: one of {', '.join(FIGURES)}")
        result = run(
            fv.fig,
            fv.run,
            fv.out,
            which=fv.which,
            index=fv.index,
            step=fv.step,
            num_images=fv.num_images,
            seed=fv.seed,
            batch=fv.batch,
            data=fv.data,
            data_dir=fv.data_dir,
        )
    except (ValueError, flags.Error) as err:
        print_error(err)
        return 1
    print(f"wrote {result['png']} and {result['json']}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
