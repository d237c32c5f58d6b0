"""The rendered table: :func:`collect` reads every run of a table (:mod:`._tables_status`)
into a JSON-serialisable dict, :func:`markdown` writes it as markdown."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from experiments._tables_grid import TABLES, Cell, TableSpec, cells
from experiments._tables_status import DONE, STALE, TODO, RunStatus, run_status
from experiments.configs import PRESETS

__all__ = ["collect", "evaluation_text", "markdown", "schedule_text", "table_spec"]


def table_spec(table: int) -> TableSpec:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(map(str, TABLES))}")
    return TABLES[table]


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


def _run_entry(cell: Cell, seed: int, root: str, st: RunStatus, command: str) -> dict[str, Any]:
    """The JSON of one run of a cell."""
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
            test_accuracy=_percent(res.test.test_accuracy),
            best_val_accuracy=_percent(res.best_val_accuracy),
            num_params=res.num_params,
            epochs=res.epochs,
            steps=res.steps,
            theta=res.stats.theta,
            device=res.device,
            date=res.date,
            eval_samples=res.eval_samples,
        )
    return entry


def _cell_entry(spec: TableSpec, cell: Cell, entries: list[dict], n_seeds: int) -> dict:
    """The JSON of a cell from its runs' entries (the done ones are counted)."""
    done = [e for e in entries if e["status"] == DONE]
    values = [e["test_accuracy"] for e in done]
    mean = statistics.fmean(values) if values else None
    return {
        "column": spec.columns[cell.col].label,
        "preset": cell.preset,
        "elems": cell.elems,
        "kernel": cell.kernel,
        "paper": cell.paper,
        "ours": mean,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "diff": None if mean is None or cell.paper is None else mean - cell.paper,
        "text": _cell_text(values, n_seeds, cell.paper, spec.paper_digits),
        "eval_samples": sorted({e["eval_samples"] for e in done}),
        "runs": entries,
    }


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
    counts = {DONE: 0, STALE: 0, TODO: 0}
    commands, stale, modified, done = [], [], [], []
    for cell in cells(spec):
        entries = []
        for seed in seeds:
            st = run_status(cell, seed, root, epochs=epochs, max_steps=max_steps)
            counts[st.status] += 1
            commands.append(cell.command_text(root, seed, **cmd_kw))
            entries.append(_run_entry(cell, seed, root, st, commands[-1]))
            if st.status == STALE:
                stale.append(f"{cell.run_id(seed)}: {st.reason}")
            if st.status == DONE and st.reason:
                modified.append(f"{cell.run_id(seed)}: {st.reason}")
            if st.status == DONE:
                done.append(entries[-1])
        rows[cell.row]["cells"].append(_cell_entry(spec, cell, entries, len(seeds)))
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
        "devices": sorted({_device_text(e["device"]) for e in done if e["device"] is not None}),
        "dates": sorted({str(e["date"])[:10] for e in done if e["date"]}),
        "stale": stale,
        "modified": modified,
        "notes": list(spec.notes),
        "preset_notes": {p: PRESETS[p].notes for p in presets if PRESETS[p].notes},
        "commands": commands,
    }


def markdown(d: dict[str, Any]) -> str:
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
