"""Multi-seed learning study (issue 14): did each run learn its subsets, and when?

    python -m experiments.seed_study --run=runs/seeds/fig4_joint_s0 --run=runs/seeds/fig4_sep_s0 \\
        --eval_samples=16 --out=docs/figures

For every run directory (a finished ``--workdir`` of a training CLI) it reads ``results.json``
and ``metrics.jsonl``, tests the best checkpoint with ``K = --eval_samples`` per-example
samples (:func:`pgcnn_jax.train.evaluate_run`, cached as ``<run>/test_k<K>.json``), and
reports: the kernel render (joint / separable), the seed, the K-sample test accuracy, whether
the run learned (test accuracy ``>= --learned``), the first step at which the epoch's training
accuracy passed ``--train_threshold``, and the final thetas and theta-gradient SNR (mean over
the last 10 epochs). Writes ``seed_study.md`` (a table, then how many seeds learned per
render), ``seed_study.json`` and ``seed_study.png`` (training accuracy and per-layer theta
against the step, every run) into ``--out``. Bad input ends with ``error: ...`` and status 1.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import flags, logging

from experiments._flagset import parse_or_help, print_error
from pgcnn_jax.train import (
    RunFiles,
    TestScores,
    check_samples,
    evaluate_run,
    upgrade_config_dict,
)
from pgcnn_jax.train._metrics import write_json

__all__ = ["main", "summarize_run"]


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    kw = dict(flag_values=fv)
    flags.DEFINE_multi_string("run", [], "A finished run directory (repeat).", **kw)
    flags.DEFINE_integer("eval_samples", 16, "K per-example samples of the test pass.", **kw)
    flags.DEFINE_float("learned", 0.99, "Test accuracy at which a run counts as learned.", **kw)
    flags.DEFINE_float("train_threshold", 0.9, "Training accuracy whose first step is reported.",
                       **kw)  # fmt: skip
    flags.DEFINE_string("out", None, "Output directory (default: the first run's parent).", **kw)
    return fv


def summarize_run(
    workdir: str, *, eval_samples: int, learned: float, train_threshold: float
) -> dict[str, Any]:
    """The row of one run (see the module doc); runs the K-sample test unless cached."""
    files = RunFiles(workdir)
    results = files.read_results()
    if results is None:
        raise ValueError(f"{workdir!r} has no results.json: is the run finished?")
    lines = files.read_epochs(partial=False)
    cache = os.path.join(workdir, f"test_k{eval_samples}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            test = TestScores.from_dict(json.load(f))
    else:
        result = evaluate_run(workdir, eval_samples=eval_samples)
        write_json(cache, result)
        test = TestScores.from_dict(result)
    passed = [r.step for r in lines if r.train_accuracy >= train_threshold]
    snr = [[g.get("theta") for g in r.grad_snr] for r in lines[-10:] if r.grad_snr]
    snr_mean = np.nanmean(np.asarray(snr, float), axis=0).tolist() if snr else None
    return {
        "run": workdir,
        "render": upgrade_config_dict(results.config)["model"]["kernel"]["render"],
        "seed": results.config["seed"],
        "steps": results.steps,
        "epochs": results.epochs,
        "best_epoch": results.best_epoch,
        "test_accuracy_k1": results.test.test_accuracy,
        "eval_samples": eval_samples,
        "test_accuracy": test.test_accuracy,
        "single_passes": [min(test.test_accuracies), max(test.test_accuracies)],
        "learned": test.test_accuracy >= learned,
        "step_train_above": passed[0] if passed else None,
        "final_train_accuracy": lines[-1].train_accuracy if lines else None,
        "theta": results.stats.theta,
        "theta_grad_snr_last10": snr_mean,
        "seconds": results.seconds,
        "curves": {
            "step": [r.step for r in lines],
            "train_accuracy": [r.train_accuracy for r in lines],
            "theta": [r.stats.theta for r in lines],
        },
    }


def _fmt(values: Sequence[float] | None, digits: int = 3) -> str:
    return "-" if values is None else " / ".join(f"{v:.{digits}f}" for v in values)


def _table(rows: list[dict[str, Any]], fv: flags.FlagValues) -> str:
    k = fv.eval_samples
    out = [
        f"| kernel | seed | test acc. K = {k} (single passes) | K = 1 | learned (>= "
        f"{100 * fv.learned:.0f} %) | first step with train acc. >= "
        f"{100 * fv.train_threshold:.0f} % | final train acc. | learned theta per layer | "
        "theta-gradient SNR (last 10 epochs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["single_passes"]
        out.append(
            f"| {r['render']} | {r['seed']} | {100 * r['test_accuracy']:.1f} % "
            f"({100 * lo:.1f}-{100 * hi:.1f}) | {100 * r['test_accuracy_k1']:.1f} % | "
            f"{'yes' if r['learned'] else 'no'} | {r['step_train_above'] or 'never'} | "
            f"{100 * r['final_train_accuracy']:.1f} % | {_fmt(r['theta'])} | "
            f"{_fmt(r['theta_grad_snr_last10'], 2)} |"
        )
    out.append("")
    for render in sorted({r["render"] for r in rows}):
        mine = [r for r in rows if r["render"] == render]
        n = sum(r["learned"] for r in mine)
        out.append(f"* {render}: {n} of {len(mine)} seeds learned (K = {k}).")
    return "\n".join(out) + "\n"


def _figure(rows: list[dict[str, Any]], path: str) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency
        raise ValueError("the figure needs matplotlib") from err
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    renders = ["joint", "separable"]
    for col, render in enumerate(renders):
        acc_ax, theta_ax = axes[0, col], axes[1, col]
        for i, r in enumerate(x for x in rows if x["render"] == render):
            c = r["curves"]
            color = f"C{i}"
            acc_ax.plot(c["step"], c["train_accuracy"], color=color, label=f"seed {r['seed']}")
            thetas = np.asarray(c["theta"], float)
            for layer in range(thetas.shape[1] if thetas.ndim == 2 else 0):
                style = ("-", "--", ":", "-.")[layer % 4]
                theta_ax.plot(c["step"], thetas[:, layer], color=color, linestyle=style,
                              label=f"seed {r['seed']} layer {layer + 1}")  # fmt: skip
        acc_ax.set_title(f"{render} kernels: training accuracy")
        acc_ax.set_ylim(0.4, 1.02)
        acc_ax.legend(fontsize=7)
        theta_ax.set_title(f"{render} kernels: theta per layer (line style)")
        theta_ax.set_xlabel("step")
        theta_ax.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1 on bad input)."""
    fv = _flag_values()
    try:
        if not parse_or_help(fv, argv, __doc__):
            return 0
        if not fv.run:
            raise ValueError("give at least one --run=DIR")
        check_samples("--eval_samples", fv.eval_samples)
        logging.set_verbosity(logging.WARNING)
        rows = []
        for run in fv.run:
            print(f"[seed_study] {run}", file=sys.stderr, flush=True)
            rows.append(
                summarize_run(
                    run,
                    eval_samples=fv.eval_samples,
                    learned=fv.learned,
                    train_threshold=fv.train_threshold,
                )  # fmt: skip
            )
    except (ValueError, flags.Error) as err:
        print_error(err)
        return 1
    out = fv.out or os.path.dirname(os.path.abspath(fv.run[0]))
    os.makedirs(out, exist_ok=True)
    table = _table(rows, fv)
    with open(os.path.join(out, "seed_study.md"), "w") as f:
        f.write(table)
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    write_json(os.path.join(out, "seed_study.json"), {"date": date, "rows": rows})
    _figure(rows, os.path.join(out, "seed_study.png"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
