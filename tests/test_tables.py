"""experiments/tables.py: grids, dry runs, rendering from fake results, the run loop with a
fake executor, and flag errors. No training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments import tables
from experiments.configs import PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {1: 8, 2: 24, 3: 33, 4: 18, 5: 30, 7: 14}


def fake_results(
    root, cell, seed, acc, *, epochs=None, max_steps=None, date="2025-01-02", **model_changes
):
    """Writes a ``results.json`` as the trainer would (accuracy as a fraction)."""
    config = PRESETS[cell.preset].config
    model = config.model.replace(
        num_elements=cell.elems, kernel=cell.kernel or config.model.kernel, **model_changes
    )
    config = config.replace(
        model=model,
        seed=seed,
        epochs=config.epochs if epochs is None else epochs,
        max_steps=max_steps,
    )
    workdir = cell.workdir(str(root), seed)
    os.makedirs(workdir, exist_ok=True)
    results = {
        "num_params": 1234,
        "test_accuracy": acc,
        "best_val_accuracy": acc,
        "epochs": config.epochs,
        "steps": 10,
        "theta": [1.0],
        "config": config.to_dict(),
        "device": {"kind": "NVIDIA H100", "platform": "gpu", "count": 1},
        "date": f"{date}T10:00:00+00:00",
    }
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f)


def find(table, preset, elems=None, kernel=None):
    (cell,) = [
        c
        for c in tables.grid(table)
        if c.preset == preset and elems in (None, c.elems) and c.kernel == kernel
    ]
    return cell


def table_rows(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| ")]


# ----------------------------------------------------------------------------- grids


def test_grid_sizes_presets_and_shared_runs():
    for table, size in SIZES.items():
        cells = tables.grid(table)
        assert len(cells) == size
        assert all(c.preset in PRESETS for c in cells)
        assert len({c.run_id(0) for c in cells}) == size  # no run twice within a table
    ids = {t: {c.run_id(0) for c in tables.grid(t)} for t in SIZES}
    assert "cifar10-se2-partial_n16_s0" in ids[2] & ids[3] & ids[4]
    assert "cifar10-se2-partial_n8_s0" in ids[7]  # the SIREN row is Table 3's run
    assert "cifar10-se2-full_n8_kmagnet_s0" in ids[7]
    assert find(3, "rotmnist-se2-partial", 8).paper == 99.23
    assert find(2, "rotmnist-e2-partial", 16).paper == 98.35  # as Table 2 prints it
    assert find(3, "rotmnist-e2-partial", 16).paper == 98.58
    assert find(4, "cifar10-se2-partial", 16).paper == 87.45
    assert find(5, "cifar100-gcnn-se2-augerino", 8).paper == 69.66
    assert find(1, "mnist6_m-mirror-full").paper == 50.0
    assert find(7, "cifar10-se2-partial", 8, "gabor").paper is None


def test_dry_run_prints_the_full_grid(tmp_path, capsys):
    for table, size in SIZES.items():
        assert tables.main(["tables", f"--table={table}", "--dry_run", f"--root={tmp_path}"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"# Table {table}: {size} runs")
        assert sum("python -m experiments." in line for line in lines) == size
        assert all(line.startswith("to run") for line in lines[1:])
    tables.main(["t", "--table=3", "--dry_run", "--root=R", "--epochs=5", "--data=cifar10=npz:/c"])
    out = capsys.readouterr().out
    assert (
        "python -m experiments.cifar --preset=cifar10-se2-partial --elems=16 --seed=0 "
        "--workdir=R/cifar10-se2-partial_n16_s0 --epochs=5 --data=npz:/c\n" in out
    )
    assert "python -m experiments.rotmnist --preset=rotmnist-t2 --seed=0 " in out  # no --elems
    assert "--preset=cifar100-t2 --seed=0 --workdir=R/cifar100-t2_n1_s0 --epochs=5\n" in out
    tables.main(["t", "--table=7", "--dry_run", "--root=R", "--seeds=0,1"])
    out = capsys.readouterr().out
    assert out.count("python -m") == 28
    assert (
        "python -m experiments.cifar --preset=cifar10-se2-full --elems=8 --kernel=mlp_swish "
        "--seed=1 --workdir=R/cifar10-se2-full_n8_kmlp_swish_s1" in out
    )
    tables.main(["t", "--table=1", "--dry_run", "--root=R"])
    assert (
        "experiments.mnist6 --preset=mnist6_m-mirror-partial --seed=0 " in capsys.readouterr().out
    )


def test_shards_partition_the_grid():
    everything = tables.runs(3, (0, 1))
    assert len(everything) == 66
    parts = [tables.runs(3, (0, 1), (i, 4)) for i in range(4)]
    assert sorted(len(p) for p in parts) == [16, 16, 17, 17]
    joined = [run for part in parts for run in part]
    assert sorted(joined, key=everything.index) == everything
    assert tables.runs(3, (0,), (1, 3)) == everything[::2][1::3]


# ----------------------------------------------------------------------------- rendering


def test_render_numbers_layout_and_json(tmp_path):
    cell = find(3, "cifar10-se2-partial", 8)
    fake_results(tmp_path, cell, 0, 0.8810)
    fake_results(tmp_path, find(3, "rotmnist-t2"), 0, 0.9750, date="2025-01-05")
    text, data = tables.render(3, str(tmp_path))
    assert text.startswith("## Table 3")
    assert "- schedule: the paper's, 300 epochs" in text
    assert "NVIDIA H100 (gpu) ×1" in text and "2025-01-02 – 2025-01-05" in text
    assert "runs: 2 of 33 done, 31 to run" in text
    rows = table_rows(text)
    assert rows[0] == "| group | N | partial | RotMNIST | CIFAR10 | CIFAR100 |"
    assert rows[1] == "| T(2) | 1 | – | 97.50 (97.23, +0.27) | – (83.11) | – (47.99) |"
    assert rows[5] == "| SE(2) | 8 | ✓ | – (99.23) | 88.10 (88.59, -0.49) | – (57.26) |"
    assert len(rows) == 12
    assert "cifar10-se2-partial --elems=8 --seed=0" in text  # the commands footnote
    got = data["rows"][4]["cells"][1]
    assert got["preset"] == "cifar10-se2-partial" and got["paper"] == 88.59
    assert got["ours"] == pytest.approx(88.10) and got["diff"] == pytest.approx(-0.49)
    assert got["runs"][0]["status"] == "done" and got["runs"][0]["num_params"] == 1234

    _, md_path, json_path = tables.write(3, str(tmp_path))
    assert md_path == str(tmp_path / "table3.md") and json_path == str(tmp_path / "table3.json")
    with open(json_path) as f:
        stored = json.load(f)
    assert stored["counts"] == {"done": 2, "stale": 0, "to run": 31}
    assert stored["rows"][4]["cells"][1]["text"] == "88.10 (88.59, -0.49)"
    assert len(stored["commands"]) == 33


def test_table_layouts(tmp_path):
    fake_results(tmp_path, find(2, "cifar10-e2-augerino", 16), 0, 0.84)
    text, _ = tables.render(2, str(tmp_path))
    rows = table_rows(text)
    assert rows[0].startswith("| group | N | RotMNIST Augerino | RotMNIST (Partial) | CIFAR10")
    assert rows[4] == (
        "| E(2) | 16 | – (99.18) | – (98.35) | 84.00 (83.54, +0.46) | – (90.12) "
        "| – (54.76) | – (61.46) |"
    )
    text, _ = tables.render(1, str(tmp_path))
    assert "|---|---|---|---|" in text
    assert table_rows(text)[:3] == [
        "| base group | dataset | G-CNN | Partial G-CNN |",
        "| SE(2) | MNIST6-180 | – (50.0) | – (100.0) |",
        "| Mirroring | MNIST6-M | – (50.0) | – (100.0) |",
    ]
    text, _ = tables.render(5, str(tmp_path))
    assert [r.split(" | ")[0:2] for r in table_rows(text)[1:4]] == [
        ["| T(2) CNN", "1"],
        ["| G-CNN", "2"],
        ["| Augerino", "2"],
    ]
    assert "inferred from the text" in text
    fake_results(tmp_path, find(7, "cifar10-se2-full", 8, "fourier"), 0, 0.5)
    text, _ = tables.render(7, str(tmp_path))
    assert "| fourier | – (n/a) | 50.00 (n/a) |" in table_rows(text)


def test_stale_schedule_is_not_counted(tmp_path):
    cell = find(3, "cifar100-e2-full", 16)
    fake_results(tmp_path, cell, 0, 0.5, epochs=5)
    st = tables.run_status(cell, 0, str(tmp_path))
    assert st.status == tables.STALE and "epochs 5 (requested 300)" in st.reason
    assert tables.run_status(cell, 0, str(tmp_path), epochs=5).status == tables.DONE
    assert tables.run_status(cell, 0, str(tmp_path), epochs=5, max_steps=9).status == "stale"
    text, data = tables.render(3, str(tmp_path))
    assert "| E(2) | 16 | ✗ | – (98.35) | – (88.95) | – (57.78) |" in text
    assert "1 stale" in text and "cifar100-e2-full_n16_s0: finished with epochs 5" in text
    text, data = tables.render(3, str(tmp_path), epochs=5)
    assert "| E(2) | 16 | ✗ | – (98.35) | – (88.95) | 50.00 (57.78, -7.78) |" in text
    assert "- schedule: 5 epochs (paper: 300)" in text
    lines = tables.dry_run_lines(3, str(tmp_path))
    assert sum(line.startswith("stale") for line in lines) == 1
    assert sum(line.startswith("to run") for line in lines) == 32


def test_runs_modified_by_hand_are_listed(tmp_path):
    plain, changed = find(1, "mnist6_180-se2-full"), find(1, "mnist6_180-se2-partial")
    fake_results(tmp_path, plain, 0, 0.5, epochs=15)
    fake_results(tmp_path, changed, 0, 0.9, epochs=15, sample_per_batch_element=False)
    assert tables.run_status(plain, 0, str(tmp_path), epochs=15).reason == ""
    st = tables.run_status(changed, 0, str(tmp_path), epochs=15)
    assert st.status == tables.DONE
    assert st.reason == "modified: model.sample_per_batch_element=False (preset: True)"
    text, data = tables.render(1, str(tmp_path), epochs=15)
    assert "| SE(2) | MNIST6-180 | 50.00 (50.0, +0.00) | 90.00 (100.0, -10.00) |" in text
    assert "mnist6_180-se2-partial_n8_s0: modified: model.sample_per_batch_element" in text
    assert data["modified"] == [f"mnist6_180-se2-partial_n8_s0: {st.reason}"]


def test_result_neutral_keys_are_the_trainers_resumable_keys(tmp_path):
    """One list of "keys that do not change results" (RESUMABLE_KEYS): a run that differs from
    its preset only there (or in its data source, the grid's own flag) is not modified."""
    from experiments.configs import get_preset
    from pgcnn_jax.train import RESUMABLE_KEYS, flat_config

    cell = find(1, "mnist6_180-se2-full")
    want = {"num_elements": cell.elems, "kernel": PRESETS[cell.preset].config.model.kernel,
            "seed": 0, "epochs": 15}  # fmt: skip
    stored = get_preset(cell.preset, num_elements=cell.elems, seed=0, epochs=15)
    neutral = stored.replace(
        data="npz:/elsewhere.npz", data_dir="/tfds", max_steps=7, checkpoint_every_steps=9,
        devices=2, model=stored.model.replace(execution="adaptive"),
    )  # fmt: skip
    flat = flat_config(neutral.to_dict())
    assert {k for k in RESUMABLE_KEYS if flat[k] != flat_config(stored.to_dict())[k]} == set(
        RESUMABLE_KEYS
    )  # every result-neutral key differs here
    assert tables.config_changes(cell, neutral.to_dict(), want) == []
    changed = neutral.replace(lr=0.5).to_dict()
    assert tables.config_changes(cell, changed, want) == [f"lr=0.5 (preset: {stored.lr!r})"]


def test_seeds_mean_and_std(tmp_path):
    cell = find(3, "cifar10-se2-full", 4)
    for seed, acc in ((0, 0.80), (1, 0.82), (2, 0.84)):
        fake_results(tmp_path, cell, seed, acc)
    text, data = tables.render(3, str(tmp_path), seeds=(0, 1, 2))
    assert "82.00 ± 2.00 (83.73, -1.73)" in text
    assert "mean ± std over seeds 0, 1, 2" in text
    got = data["rows"][1]["cells"][1]
    assert got["n"] == 3 and got["std"] == pytest.approx(2.0)
    text, _ = tables.render(3, str(tmp_path), seeds=(0, 1, 3))
    assert "81.00 ± 1.41 [2/3 seeds] (83.73, -2.73)" in text


# ----------------------------------------------------------------------------- running


def test_run_loop_with_a_fake_executor(tmp_path, capsys):
    fake_results(tmp_path, find(1, "mnist6_m-e2-full"), 0, 0.5, epochs=2)
    calls = []

    def execute(cmd):
        calls.append(cmd)
        preset = next(a.split("=", 1)[1] for a in cmd if a.startswith("--preset="))
        if preset == "mnist6_180-e2-full":
            return 3  # a failed run does not stop the grid
        cell = find(1, preset)
        fake_results(tmp_path, cell, 0, 1.0, epochs=2)
        return 0

    argv = ["t", "--table=1", f"--root={tmp_path}", "--epochs=2", "--shard=0/2"]
    assert tables.main(argv, execute=execute) == 1
    out, err = capsys.readouterr()
    assert len(calls) == 3 and all(c[0] == sys.executable for c in calls)
    assert "[1/4] mnist6_180-se2-full N=8 seed=0: to run" in out
    assert "[4/4] mnist6_m-e2-full N=8 seed=0: done, skipped" in out
    assert "mnist6_180-e2-full_n8_s0: exit status 3" in err
    assert "| E(2) | MNIST6-180 | – (50.0) | – (100.0) |" in out
    assert "| SE(2) | MNIST6-180 | 100.00 (50.0, +50.00) | – (100.0) |" in out
    assert os.path.exists(tmp_path / "table1.md") and os.path.exists(tmp_path / "table1.json")
    # Rendering only runs nothing; a custom --out puts the JSON beside it.
    out_md = tmp_path / "x" / "t1.md"
    assert tables.main(["t", "--table=1", f"--root={tmp_path}", "--render_only",
                        f"--out={out_md}", "--epochs=2"], execute=None) == 0  # fmt: skip
    assert os.path.exists(tmp_path / "x" / "t1.json")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--table=6", "unknown table 6"),
        ("--shard=2/2", "--shard expects i/k"),
        ("--shard=1", "--shard expects i/k"),
        ("--seeds=a", "--seeds expects"),
        ("--data=mnist=npz:x", "--data expects DATASET=SOURCE"),
        ("--epochs=0", "--epochs must be a positive integer"),
        ("--bogus", "Unknown command line flag 'bogus'"),
    ],
)
def test_bad_flags(flag, message, capsys):
    argv = ["t", flag] + ([] if flag.startswith("--table") else ["--table=3"])
    assert tables.main([*argv, "--dry_run"]) == 1
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown table"):
        tables.grid(6)


def test_module_entry_point_exits_nonzero():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.tables", "--table=8", "--dry_run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unknown table 8; expected one of 1, 2, 3, 4, 5, 7"
    )
