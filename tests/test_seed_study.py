"""experiments/seed_study.py on two tiny finished runs (joint and separable)."""

import json
import shutil

import pytest
from _helpers import TINY, tiny_config  # tests/ is on sys.path

from experiments import seed_study
from pgcnn_jax.train import train_and_evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tiny_run, mnist_npz, tmp_path_factory):
    """The shared tiny run (joint, copied: seed_study caches into it) and a separable one."""
    root = tmp_path_factory.mktemp("seed_study")
    runs = [str(shutil.copytree(tiny_run, root / "joint")), str(root / "sep")]
    model = TINY.replace(separable=True)
    train_and_evaluate(tiny_config(mnist_npz, model=model, epochs=2), runs[1], progress=False)
    return root, runs


def test_table_json_and_figure(two_runs, capsys):
    root, runs = two_runs
    out = root / "out"
    args = ["seed_study", *(f"--run={r}" for r in runs), "--eval_samples=2", f"--out={out}"]
    assert seed_study.main([*args, "--learned=0.0"]) == 0
    table = (out / "seed_study.md").read_text()
    assert "| joint | 0 |" in table and "| separable | 0 |" in table
    assert "* joint: 1 of 1 seeds learned (K = 2)." in table  # threshold 0: every run
    rows = json.loads((out / "seed_study.json").read_text())["rows"]
    assert [r["render"] for r in rows] == ["joint", "separable"]
    for r in rows:
        assert r["eval_samples"] == 2 and len(r["curves"]["step"]) == r["epochs"] == 2
        assert len(r["theta"]) == len(r["theta_grad_snr_last10"]) == 3
        lo, hi = r["single_passes"]
        assert 0.0 <= lo <= hi <= 1.0
    assert (out / "seed_study.png").read_bytes()[:8] == PNG_MAGIC
    # the K-sample test is cached in the run directory and reused
    cached = json.loads((root / "joint" / "test_k2.json").read_text())
    assert cached["test_accuracy"] == rows[0]["test_accuracy"]
    assert seed_study.main([*args, "--learned=1.01"]) == 0
    assert "* separable: 0 of 1 seeds learned" in (out / "seed_study.md").read_text()
    capsys.readouterr()


def test_errors(tmp_path, capsys):
    assert seed_study.main(["seed_study"]) == 1
    assert "give at least one --run" in capsys.readouterr().err
    assert seed_study.main(["seed_study", f"--run={tmp_path}"]) == 1
    assert "has no results.json" in capsys.readouterr().err
