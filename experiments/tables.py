"""Trains and renders the paper's Tables 1-5 and 7 (REFERENCE 8) from the presets.

    python -m experiments.tables --table=3 --dry_run                 # the grid, with status
    python -m experiments.tables --table=3 --epochs=5 --shard=0/4    # train a quarter of it
    python -m experiments.tables --table=3 --epochs=5 --render_only  # runs/tables/table3.md

Each cell of a table is a preset with ``--elems`` / ``--kernel`` overrides and a seed; it
trains into ``ROOT/<preset>_n<N>[_k<kernel>]_s<seed>`` (a run shared by several tables is
trained once) by running the dataset's CLI (``python -m experiments.<cli> --preset=...``) as a
subprocess. A run counts as done when its ``results.json`` was written under the requested
schedule (``--epochs`` / ``--max_steps``, default the preset's); one finished under another
schedule is *stale* and not counted. Runs resume from their directories, so an interrupted
grid continues where it stopped. Failed runs are reported at the end (exit status 1).

The table is written as markdown (``--out``, default ``ROOT/table<N>.md``) with each cell as
``ours (paper, ours - paper)`` in percent, and as JSON beside it (``table<N>.json``).

Flags use a private ``absl.flags.FlagValues`` (the names ``--epochs``, ``--data``, ... are
also defined by the training CLIs' global flags).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import flags

from experiments._flagset import parse_or_help, print_error
from experiments._tables_grid import TABLES, Cell, TableSpec, cells
from experiments.configs import CLI_OF_DATASET, PRESETS, get_preset
from pgcnn_jax.train import upgrade_config_dict

__all__ = [
    "DONE",
    "STALE",
    "TODO",
    "collect",
    "config_changes",
    "dry_run_lines",
    "eval_samples_of",
    "evaluation_text",
    "grid",
    "main",
    "parse_data",
    "parse_seeds",
    "parse_shard",
    "render",
    "run_grid",
    "run_status",
    "runs",
    "table_spec",
    "write",
]

DONE, STALE, TODO = "done", "stale", "to run"
RESULTS_FILE = "results.json"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    kw = dict(flag_values=fv)
    flags.DEFINE_integer("table", None, f"Paper table: {', '.join(map(str, TABLES))}.", **kw)
    flags.DEFINE_string("root", "runs/tables", "Directory holding one directory per run.", **kw)
    flags.DEFINE_bool("dry_run", False, "Print the grid's commands with their status.", **kw)
    flags.DEFINE_bool("render_only", False, "Do not train; render what exists.", **kw)
    flags.DEFINE_integer("epochs", None, "Epochs of every run (default: the preset's).", **kw)
    flags.DEFINE_integer("max_steps", None, "Stop every run after this many steps.", **kw)
    flags.DEFINE_string("shard", None, "i/k: only the runs with index % k == i.", **kw)
    flags.DEFINE_string("seeds", "0", "Comma-separated seeds (several: mean ± std).", **kw)
    flags.DEFINE_string("data_dir", None, "TFDS data directory, passed to every run.", **kw)
    flags.DEFINE_multi_string(
        "data", [], "DATASET=SOURCE (e.g. mnist6_180=npz:PATH), repeatable; default tfds.", **kw
    )
    flags.DEFINE_string("out", None, "Markdown path (default ROOT/table<N>.md).", **kw)
    return fv


# ----------------------------------------------------------------------------- the grid
def table_spec(table: int) -> TableSpec:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(map(str, TABLES))}")
    return TABLES[table]


def grid(table: int) -> list[Cell]:
    """The cells of ``table`` in row-major order (see :mod:`experiments._tables_grid`)."""
    return cells(table_spec(table))


def parse_seeds(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; raises ``ValueError`` on anything else."""
    if not isinstance(text, str):
        return tuple(int(s) for s in text)
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds expects distinct non-negative integers, got {text!r}")
    return seeds


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/k"`` -> ``(i, k)`` with ``0 <= i < k``; ``None`` -> ``None``."""
    if text is None:
        return None
    i, sep, k = text.partition("/")
    try:
        shard = (int(i), int(k))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"--shard expects i/k with integers 0 <= i < k, got {text!r}")
    return shard


def parse_data(items: Sequence[str]) -> dict[str, str]:
    """``["mnist6_180=npz:PATH", ...]`` -> ``{"mnist6_180": "npz:PATH", ...}``."""
    out = {}
    for item in items:
        dataset, sep, source = item.partition("=")
        if not sep or not source or dataset not in CLI_OF_DATASET:
            raise ValueError(
                f"--data expects DATASET=SOURCE with DATASET one of "
                f"{', '.join(CLI_OF_DATASET)}, got {item!r}"
            )
        out[dataset] = source
    return out


def runs(
    table: int, seeds: Sequence[int] = (0,), shard: tuple[int, int] | None = None
) -> list[tuple[Cell, int]]:
    """``(cell, seed)`` pairs of ``table`` (cell-major), those with index % k == i for a
    ``shard`` ``(i, k)``."""
    out = [(cell, seed) for cell in grid(table) for seed in seeds]
    if shard is not None:
        i, k = shard
        out = [run for n, run in enumerate(out) if n % k == i]
    return out


# ----------------------------------------------------------------------------- status
@dataclasses.dataclass(frozen=True)
class RunStatus:
    status: str
    reason: str = ""
    results: dict[str, Any] | None = None


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


def run_status(
    cell: Cell, seed: int, root: str, *, epochs: int | None = None, max_steps: int | None = None
) -> RunStatus:
    """:data:`DONE` when ``results.json`` exists with the requested schedule (and the cell's
    seed, N, kernel, dataset); :data:`STALE` when it exists with others; else :data:`TODO`."""
    workdir = cell.workdir(root, seed)
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        resumes = os.path.isdir(workdir) and bool(os.listdir(workdir))
        return RunStatus(TODO, "resumes from its directory" if resumes else "")
    try:
        with open(path) as f:
            results = json.load(f)
        config = upgrade_config_dict(results["config"])  # older config.json forms too
        float(results["test_accuracy"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return RunStatus(TODO, f"unreadable {RESULTS_FILE} ({type(err).__name__})")
    model = config["model"]
    have = {
        "epochs": config.get("epochs"),
        "max_steps": config.get("max_steps"),
        "seed": config.get("seed", seed),
        "num_elements": model.get("num_elements", cell.elems),
        "kernel": model["kernel"]["net"],
        "dataset": config.get("dataset", cell.dataset),
    }
    want = _want(cell, seed, epochs, max_steps)
    diff = [f"{k} {have[k]} (requested {want[k]})" for k in want if have[k] != want[k]]
    if diff:
        return RunStatus(STALE, "finished with " + ", ".join(diff), results)
    changes = config_changes(cell, config, want)
    return RunStatus(DONE, ("modified: " + ", ".join(changes)) if changes else "", results)


# Config keys that do not change what a run computes.
_HARMLESS = {"data", "data_dir", "checkpoint_every_steps", "max_steps"}
# Config keys the rendered table states on their own line (not listed as modifications).
_STATED = {"eval_samples"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_changes(cell: Cell, stored: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Fields where a finished run's config differs from its cell's preset (other than the
    cell's own overrides and settings that do not change results), e.g. a run started by hand
    with ``--set``; the table lists them so a modified cell is never silent."""
    expected = get_preset(
        cell.preset,
        num_elements=want["num_elements"],
        kernel=want["kernel"],
        seed=want["seed"],
        epochs=want["epochs"],
    ).to_dict()
    exp, got = _flat(expected), _flat(upgrade_config_dict(stored))
    return [
        f"{k}={got.get(k)!r} (preset: {exp.get(k)!r})"
        for k in sorted(set(exp) | set(got))
        if k.split(".")[-1] not in _HARMLESS | _STATED and exp.get(k) != got.get(k)
    ]


def eval_samples_of(results: Mapping[str, Any]) -> int:
    """``K`` of a finished run: ``results["eval_samples"]``, else its config's, else 1 (runs
    from before the setting existed made one stochastic pass)."""
    k = results.get("eval_samples", (results.get("config") or {}).get("eval_samples", 1))
    return int(k)


def evaluation_text(ks: Sequence[int]) -> str:
    """The table's line on how the test accuracies were evaluated (``ks``: the ``K`` of its
    finished runs)."""
    ks = sorted(set(ks))
    single = "K = 1, one stochastic pass with sampled elements shared per test batch (release)"
    if not ks:
        return "evaluation: –"
    if ks == [1]:
        return f"evaluation: {single}"
    if len(ks) == 1:
        return (
            f"evaluation: K = {ks[0]}, mean softmax over {ks[0]} samplings drawn per test "
            "example (also used for model selection)"
        )
    return (
        f"evaluation: K differs between runs ({', '.join(map(str, ks))}); each cell states its "
        "K (K > 1: mean softmax over K per-example samplings)"
    )


# ----------------------------------------------------------------------------- rendering
def _paper_epochs(spec: TableSpec) -> list[int]:
    return sorted({PRESETS[c.preset].config.epochs for c in cells(spec)})


def schedule_text(table: int, epochs: int | None = None, max_steps: int | None = None) -> str:
    """E.g. ``"schedule: 5 epochs (paper: 300)"``."""
    paper = "/".join(map(str, _paper_epochs(table_spec(table))))
    if epochs is None and max_steps is None:
        return f"schedule: the paper's, {paper} epochs"
    text = f"schedule: {paper if epochs is None else epochs} epoch{'' if epochs == 1 else 's'}"
    if max_steps is not None:
        text += f", each run stopped after at most {max_steps} steps"
    return f"{text} (paper: {paper})"


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _cell_text(values: list[float], n_seeds: int, paper: float | None, digits: int) -> str:
    paper_text = "n/a" if paper is None else _fmt(paper, digits)
    if not values:
        return f"– ({paper_text})"
    text = _fmt(statistics.fmean(values))
    if len(values) > 1:
        text += f" ± {_fmt(statistics.stdev(values))}"
    if len(values) < n_seeds:
        text += f" [{len(values)}/{n_seeds} seeds]"
    if paper is None:
        return f"{text} (n/a)"
    diff = round(statistics.fmean(values), 2) - paper
    return f"{text} ({paper_text}, {diff:+.2f})"


def _device_text(device: Any) -> str:
    if isinstance(device, dict):
        text = str(device.get("kind", "?"))
        if device.get("platform"):
            text += f" ({device['platform']})"
        if device.get("count"):
            text += f" ×{device['count']}"
        return text
    return str(device)


def _percent(x: Any) -> float | None:
    """The trainer reports accuracies as fractions (``correct / count``); tables show %."""
    return None if x is None else 100.0 * float(x)


def collect(
    table: int,
    root: str,
    *,
    seeds: Sequence[int] = (0,),
    epochs: int | None = None,
    max_steps: int | None = None,
    data: Mapping[str, str] | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Everything the rendered table shows, as a JSON-serialisable dict."""
    spec = table_spec(table)
    seeds = parse_seeds(seeds)
    cmd_kw = dict(epochs=epochs, max_steps=max_steps, data=data, data_dir=data_dir)
    rows = [{"labels": list(row.labels), "cells": []} for row in spec.rows]
    devices: list[str] = []
    dates: list[str] = []
    counts = {DONE: 0, STALE: 0, TODO: 0}
    commands, stale, modified = [], [], []
    for cell in cells(spec):
        entries, values = [], []
        cell_ks: set[int] = set()
        for seed in seeds:
            st = run_status(cell, seed, root, epochs=epochs, max_steps=max_steps)
            counts[st.status] += 1
            command = cell.command_text(root, seed, **cmd_kw)
            commands.append(command)
            entry: dict[str, Any] = {
                "seed": seed,
                "run_id": cell.run_id(seed),
                "workdir": cell.workdir(root, seed),
                "status": st.status,
                "reason": st.reason,
                "command": command,
            }
            res = st.results
            if res is not None:
                entry.update(
                    test_accuracy=_percent(res.get("test_accuracy")),
                    best_val_accuracy=_percent(res.get("best_val_accuracy")),
                    num_params=res.get("num_params"),
                    epochs=res.get("epochs"),
                    steps=res.get("steps"),
                    theta=res.get("theta"),
                    device=res.get("device"),
                    date=res.get("date"),
                    eval_samples=eval_samples_of(res),
                )
            if st.status == STALE:
                stale.append(f"{cell.run_id(seed)}: {st.reason}")
            if st.status == DONE and st.reason:
                modified.append(f"{cell.run_id(seed)}: {st.reason}")
            if st.status == DONE:
                values.append(entry["test_accuracy"])
                cell_ks.add(entry["eval_samples"])
                if res.get("device") is not None:
                    devices.append(_device_text(res["device"]))
                if res.get("date"):
                    dates.append(str(res["date"])[:10])
            entries.append(entry)
        mean = statistics.fmean(values) if values else None
        rows[cell.row]["cells"].append(
            {
                "column": spec.columns[cell.col].label,
                "preset": cell.preset,
                "elems": cell.elems,
                "kernel": cell.kernel,
                "paper": cell.paper,
                "ours": mean,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
                "diff": None if mean is None or cell.paper is None else mean - cell.paper,
                "text": _cell_text(values, len(seeds), cell.paper, spec.paper_digits),
                "eval_samples": sorted(cell_ks),
                "runs": entries,
            }
        )
    presets = sorted({c.preset for c in cells(spec)})
    ks = sorted({k for row in rows for c in row["cells"] for k in c["eval_samples"]})
    return {
        "table": spec.number,
        "title": spec.title,
        "root": root,
        "seeds": list(seeds),
        "schedule": {
            "epochs": epochs,
            "max_steps": max_steps,
            "paper_epochs": _paper_epochs(spec),
            "text": schedule_text(table, epochs, max_steps),
        },
        "accuracy_unit": "percent (test accuracy of the best-validation checkpoint)",
        "eval_samples": ks,
        "evaluation": evaluation_text(ks),
        "row_header": list(spec.row_header),
        "columns": [c.label for c in spec.columns],
        "rows": rows,
        "counts": counts,
        "devices": sorted(set(devices)),
        "dates": sorted(set(dates)),
        "stale": stale,
        "modified": modified,
        "notes": list(spec.notes),
        "preset_notes": {p: PRESETS[p].notes for p in presets if PRESETS[p].notes},
        "commands": commands,
    }


def _markdown(d: dict[str, Any]) -> str:
    n_runs = sum(d["counts"].values())
    dates = d["dates"]
    date_text = "–" if not dates else dates[0] if len(dates) == 1 else f"{dates[0]} – {dates[-1]}"
    seeds = ", ".join(map(str, d["seeds"]))
    lines = [
        f"## {d['title']}",
        "",
        "Cells: ours (paper, ours − paper), test accuracy in %"
        + (f"; mean ± std over seeds {seeds}" if len(d["seeds"]) > 1 else f"; seed {seeds}")
        + "; – = not run yet.",
        "",
        f"- {d['schedule']['text']}",
        f"- {d['evaluation']}",
        f"- device(s): {', '.join(d['devices']) or '–'}; date(s): {date_text}",
        f"- runs: {d['counts'][DONE]} of {n_runs} done"
        + (
            f", {d['counts'][STALE]} stale (finished under another schedule/config, not counted)"
            if d["counts"][STALE]
            else ""
        )
        + (f", {d['counts'][TODO]} to run" if d["counts"][TODO] else ""),
        "",
    ]
    header = d["row_header"] + d["columns"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    mixed = len(d["eval_samples"]) > 1

    def text(c: dict[str, Any]) -> str:
        ks = c["eval_samples"]
        return c["text"] + (f" [K={'/'.join(map(str, ks))}]" if mixed and ks else "")

    for row in d["rows"]:
        lines.append("| " + " | ".join(row["labels"] + [text(c) for c in row["cells"]]) + " |")
    by_note: dict[str, list[str]] = {}
    for preset, note in d["preset_notes"].items():
        by_note.setdefault(note, []).append(f"`{preset}`")
    notes = d["notes"] + [f"{', '.join(p)}: {n}" for n, p in by_note.items()]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    if d["modified"]:
        lines += ["", "Runs that differ from their preset (counted; run by hand):", ""]
        lines += [f"- {s}" for s in d["modified"]]
    if d["stale"]:
        lines += ["", "Stale runs (not counted):", ""] + [f"- {s}" for s in d["stale"]]
    lines += ["", f"Commands ({len(d['commands'])} runs):", "", "```sh", *d["commands"], "```", ""]
    return "\n".join(lines)


def render(table: int, root: str, **kw: Any) -> tuple[str, dict[str, Any]]:
    """``(markdown, json dict)`` of ``table`` from the runs under ``root``; ``kw`` as
    :func:`collect` (``seeds``, ``epochs``, ``max_steps``, ``data``, ``data_dir``)."""
    d = collect(table, root, **kw)
    return _markdown(d), d


def write(table: int, root: str, out: str | None = None, **kw: Any) -> tuple[str, str, str]:
    """Writes the markdown to ``out`` (default ``root/table<N>.md``) and the JSON beside it;
    returns ``(markdown, markdown path, json path)``."""
    text, d = render(table, root, **kw)
    out = out or os.path.join(root, f"table{table}.md")
    json_path = os.path.splitext(out)[0] + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(json_path, "w") as f:
        json.dump(d, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return text, out, json_path


# ----------------------------------------------------------------------------- running
def dry_run_lines(
    table: int,
    root: str,
    *,
    seeds: Sequence[int] = (0,),
    shard: tuple[int, int] | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    data: Mapping[str, str] | None = None,
    data_dir: str | None = None,
) -> list[str]:
    """A ``#`` header line, then ``STATUS  COMMAND  [# reason]`` per run."""
    todo = runs(table, parse_seeds(seeds), shard)
    total = len(grid(table)) * len(parse_seeds(seeds))
    shard_text = f", shard {shard[0]}/{shard[1]}: {len(todo)} of {total}" if shard else ""
    lines = [
        f"# Table {table}: {total} runs{shard_text}; root {root}; "
        f"{schedule_text(table, epochs, max_steps)}"
    ]
    for cell, seed in todo:
        st = run_status(cell, seed, root, epochs=epochs, max_steps=max_steps)
        cmd = cell.command_text(
            root, seed, epochs=epochs, max_steps=max_steps, data=data, data_dir=data_dir
        )
        lines.append(f"{st.status:<7} {cmd}" + (f"  # {st.reason}" if st.reason else ""))
    return lines


def execute(cmd: Sequence[str]) -> int:
    """Runs ``cmd`` with the repository on ``PYTHONPATH``, streaming its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, env.get("PYTHONPATH")) if p)
    return subprocess.run(list(cmd), env=env, check=False).returncode


def run_grid(
    table: int,
    root: str,
    *,
    seeds: Sequence[int] = (0,),
    shard: tuple[int, int] | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    data: Mapping[str, str] | None = None,
    data_dir: str | None = None,
    execute: Callable[[Sequence[str]], int] = execute,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
) -> list[str]:
    """Trains every run of ``table`` (in the ``shard``) not done yet, one after another;
    returns the failures (``"run id: why"``), continuing past each."""
    todo = runs(table, parse_seeds(seeds), shard)
    failures = []
    for i, (cell, seed) in enumerate(todo, 1):
        kernel = f" kernel={cell.kernel}" if cell.kernel else ""
        head = f"[{i}/{len(todo)}] {cell.preset} N={cell.elems}{kernel} seed={seed}"
        st = run_status(cell, seed, root, epochs=epochs, max_steps=max_steps)
        if st.status == DONE:
            log(f"{head}: done, skipped")
            continue
        log(f"{head}: {st.status}" + (f" ({st.reason})" if st.reason else ""))
        kw = dict(epochs=epochs, max_steps=max_steps, data=data, data_dir=data_dir)
        log("  $ " + cell.command_text(root, seed, **kw))
        rc = execute(cell.command(root, seed, python=sys.executable, **kw))
        after = run_status(cell, seed, root, epochs=epochs, max_steps=max_steps)
        failure = None
        if rc != 0:
            failure = f"{cell.run_id(seed)}: exit status {rc}"
        elif after.status != DONE:
            reason = f" ({after.reason})" if after.reason else ""
            failure = f"{cell.run_id(seed)}: exited 0 but is {after.status}{reason}"
        if failure:
            failures.append(failure)
            log(f"  FAILED: {failure}")
    return failures


def main(argv: Sequence[str] | None = None, *, execute=execute) -> int:
    """The command line; returns the exit status (1 on bad flags or failed runs)."""
    argv = list(sys.argv if argv is None else argv)
    fv = _flag_values()
    try:
        if not parse_or_help(fv, argv, __doc__):
            return 0
        if fv.table is None:
            raise ValueError(f"--table is required: one of {', '.join(map(str, TABLES))}")
        table_spec(fv.table)
        for name in ("epochs", "max_steps"):
            if fv[name].value is not None and fv[name].value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {fv[name].value}")
        if fv.dry_run and fv.render_only:
            raise ValueError("--dry_run and --render_only exclude each other")
        kw = dict(
            seeds=parse_seeds(fv.seeds),
            epochs=fv.epochs,
            max_steps=fv.max_steps,
            data=parse_data(fv.data),
            data_dir=fv.data_dir,
        )
        shard = parse_shard(fv.shard)
    except (ValueError, flags.Error) as err:
        print_error(err)
        return 1
    table, root = fv.table, fv.root
    if fv.dry_run:
        print("\n".join(dry_run_lines(table, root, shard=shard, **kw)), flush=True)
        return 0
    failures = []
    if not fv.render_only:
        failures = run_grid(table, root, shard=shard, execute=execute, **kw)
    text, md_path, json_path = write(table, root, fv.out, **kw)
    print(text, flush=True)
    print(f"wrote {md_path} and {json_path}", file=sys.stderr, flush=True)
    if failures:
        print(f"{len(failures)} run(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        sys.stderr.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
