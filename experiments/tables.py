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
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import flags

from experiments._flagset import parse_or_help, print_error
from experiments._tables_grid import TABLES, Cell, cells
from experiments._tables_render import (
    collect,
    evaluation_text,
    markdown,
    parse_seeds,
    schedule_text,
    table_spec,
)
from experiments._tables_status import (
    DONE,
    STALE,
    TODO,
    RunStatus,
    config_changes,
    eval_samples_of,
    run_status,
)
from experiments.configs import CLI_OF_DATASET

__all__ = [
    "DONE",
    "STALE",
    "TODO",
    "RunStatus",
    "collect",
    "config_changes",
    "dry_run_lines",
    "eval_samples_of",
    "evaluation_text",
    "grid",
    "main",
    "markdown",
    "parse_data",
    "parse_seeds",
    "parse_shard",
    "render",
    "run_grid",
    "run_status",
    "runs",
    "schedule_text",
    "table_spec",
    "write",
]

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
def grid(table: int) -> list[Cell]:
    """The cells of ``table`` in row-major order (see :mod:`experiments._tables_grid`)."""
    return cells(table_spec(table))


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


def render(table: int, root: str, **kw: Any) -> tuple[str, dict[str, Any]]:
    """``(markdown, json dict)`` of ``table`` from the runs under ``root``; ``kw`` as
    :func:`collect` (``seeds``, ``epochs``, ``max_steps``, ``data``, ``data_dir``)."""
    d = collect(table, root, **kw)
    return markdown(d), d


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
@dataclasses.dataclass(frozen=True)
class GridSelection:
    """The runs of ``table`` (in the ``shard``, for the ``seeds``) under ``root``, with the
    schedule and data overrides their commands get."""

    table: int
    root: str
    seeds: Sequence[int] = (0,)
    shard: tuple[int, int] | None = None
    epochs: int | None = None
    max_steps: int | None = None
    data: Mapping[str, str] | None = None
    data_dir: str | None = None

    def todo(self) -> list[tuple[Cell, int]]:
        return runs(self.table, parse_seeds(self.seeds), self.shard)

    def status(self, cell: Cell, seed: int):
        return run_status(cell, seed, self.root, epochs=self.epochs, max_steps=self.max_steps)

    def command_kw(self) -> dict[str, Any]:
        return dict(
            epochs=self.epochs, max_steps=self.max_steps, data=self.data, data_dir=self.data_dir
        )


def dry_run_lines(table: int, root: str, **selection: Any) -> list[str]:
    """A ``#`` header line, then ``STATUS  COMMAND  [# reason]`` per run;
    ``selection``: the other fields of :class:`GridSelection`."""
    sel = GridSelection(table, root, **selection)
    todo = sel.todo()
    total = len(grid(table)) * len(parse_seeds(sel.seeds))
    shard = sel.shard
    shard_text = f", shard {shard[0]}/{shard[1]}: {len(todo)} of {total}" if shard else ""
    lines = [
        f"# Table {table}: {total} runs{shard_text}; root {root}; "
        f"{schedule_text(table, sel.epochs, sel.max_steps)}"
    ]
    for cell, seed in todo:
        st = sel.status(cell, seed)
        cmd = cell.command_text(root, seed, **sel.command_kw())
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
    execute: Callable[[Sequence[str]], int] = execute,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
    **selection: Any,
) -> list[str]:
    """Trains every run of ``table`` (in the ``shard``) not done yet, one after another;
    returns the failures (``"run id: why"``), continuing past each. ``selection``: the other
    fields of :class:`GridSelection`."""
    sel = GridSelection(table, root, **selection)
    todo = sel.todo()
    failures = []
    for i, (cell, seed) in enumerate(todo, 1):
        kernel = f" kernel={cell.kernel}" if cell.kernel else ""
        head = f"[{i}/{len(todo)}] {cell.preset} N={cell.elems}{kernel} seed={seed}"
        st = sel.status(cell, seed)
        if st.status == DONE:
            log(f"{head}: done, skipped")
            continue
        log(f"{head}: {st.status}" + (f" ({st.reason})" if st.reason else ""))
        kw = sel.command_kw()
        log("  $ " + cell.command_text(root, seed, **kw))
        rc = execute(cell.command(root, seed, python=sys.executable, **kw))
        after = sel.status(cell, seed)
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
