"""Whether a table's run is done: its ``results.json`` (a :class:`~pgcnn_jax.train.RunResults`)
under the requested schedule, and how its config differs from its cell's preset."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from experiments._tables_grid import Cell
from experiments.configs import PRESETS, get_preset
from pgcnn_jax.train import (
    RESUMABLE_KEYS,
    RunDir,
    RunResults,
    flat_config,
    upgrade_config_dict,
)

__all__ = ["DONE", "STALE", "TODO", "RunStatus", "config_changes", "eval_samples_of", "run_status"]

DONE, STALE, TODO = "done", "stale", "to run"
RESULTS_FILE = "results.json"

# Config keys a table does not list as modifications: those that do not change results (the
# trainer's RESUMABLE_KEYS), the data source (the grid's own --data flag) and the keys the
# rendered table states on their own line.
_UNLISTED = frozenset(RESUMABLE_KEYS) | {"data", "eval_samples"}


@dataclasses.dataclass(frozen=True)
class RunStatus:
    status: str
    reason: str = ""
    results: RunResults | None = None


def _want(cell: Cell, seed: int, epochs: int | None, max_steps: int | None) -> dict[str, Any]:
    config = PRESETS[cell.preset].config
    return {
        "epochs": config.epochs if epochs is None else epochs,
        "max_steps": max_steps,
        "seed": seed,
        "num_elements": cell.elems,
        "kernel": cell.kernel or config.model.kernel.net,
        "dataset": config.dataset,
    }


def _read(workdir: str) -> tuple[RunResults, dict[str, Any]]:
    """The run's results and its config in today's form (older ``config.json`` forms are
    upgraded); ``ValueError`` / ``OSError`` / ``TypeError`` / ``KeyError`` when unusable."""
    results = RunDir(workdir).read_results()
    if not isinstance(results.config, dict):
        raise TypeError(f"config is {results.config!r:.40}")
    float(results.test.test_accuracy)
    return results, upgrade_config_dict(results.config)


def run_status(
    cell: Cell, seed: int, root: str, *, epochs: int | None = None, max_steps: int | None = None
) -> RunStatus:
    """:data:`DONE` when ``results.json`` exists with the requested schedule (and the cell's
    seed, N, kernel, dataset); :data:`STALE` when it exists with others; else :data:`TODO`."""
    workdir = cell.workdir(root, seed)
    if not os.path.exists(os.path.join(workdir, RESULTS_FILE)):
        resumes = os.path.isdir(workdir) and bool(os.listdir(workdir))
        return RunStatus(TODO, "resumes from its directory" if resumes else "")
    try:
        results, config = _read(workdir)
    except (OSError, ValueError, TypeError, KeyError) as err:
        return RunStatus(TODO, f"unreadable {RESULTS_FILE} ({type(err).__name__})")
    model = config["model"]
    want = _want(cell, seed, epochs, max_steps)
    have = {
        "epochs": config.get("epochs"),
        "max_steps": config.get("max_steps"),
        "seed": config.get("seed", seed),
        "num_elements": model.get("num_elements", cell.elems),
        "kernel": model["kernel"]["net"],
        "dataset": config.get("dataset", cell.dataset),
    }
    diff = [f"{k} {have[k]} (requested {want[k]})" for k in want if have[k] != want[k]]
    if diff:
        return RunStatus(STALE, "finished with " + ", ".join(diff), results)
    changes = config_changes(cell, config, want)
    return RunStatus(DONE, ("modified: " + ", ".join(changes)) if changes else "", results)


def config_changes(cell: Cell, stored: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Fields where a finished run's config differs from its cell's preset (other than the
    cell's own overrides and the keys of ``_UNLISTED``), e.g. a run started by hand with
    ``--set``; the table lists them so a modified cell is never silent."""
    expected = get_preset(
        cell.preset,
        num_elements=want["num_elements"],
        kernel=want["kernel"],
        seed=want["seed"],
        epochs=want["epochs"],
    ).to_dict()
    exp, got = flat_config(expected), flat_config(upgrade_config_dict(stored))
    return [
        f"{k}={got.get(k)!r} (preset: {exp.get(k)!r})"
        for k in sorted(set(exp) | set(got))
        if k not in _UNLISTED and exp.get(k) != got.get(k)
    ]


def eval_samples_of(results: RunResults | Mapping[str, Any]) -> int:
    """``K`` of a finished run (:attr:`RunResults.eval_samples`: its ``eval_samples``, else its
    config's, else 1); ``results``: a :class:`RunResults` or its JSON object."""
    if not isinstance(results, RunResults):
        results = RunResults.from_dict(dict(results))
    return results.eval_samples
