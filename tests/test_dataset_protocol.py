"""The dataset protocol: every registered dataset through the same methods, the registry's
errors, a toy dataset added with one class and one ``register_dataset`` call and loaded
through ``load_splits``, and no branching on dataset names outside ``pgcnn_jax/data``."""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import ClassVar

import numpy as np
import pytest

import pgcnn_jax as pg
from pgcnn_jax import data as pdata
from pgcnn_jax.data import _base
from pgcnn_jax.models import ModelConfig
from pgcnn_jax.train import TrainConfig

NAMES = pdata.DATASET_NAMES
ROOT = pathlib.Path(pg.__file__).parent.parent


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, restored after the test (a toy registration stays local)."""
    monkeypatch.setattr(_base, "_REGISTRY", dict(_base._REGISTRY))


# ----------------------------------------------------------------------------- every dataset


@pytest.mark.parametrize("name", NAMES)
def test_every_dataset_answers_the_protocol(name):
    ds = pdata.get_dataset(name)
    assert isinstance(ds, pdata.Dataset) and ds.name == name
    assert ds.spec == pdata.get_spec(name) and pdata.get_dataset(ds) is ds
    assert ds == pdata.get_dataset(name) and hash(ds) == hash(pdata.get_dataset(name))
    tfds_line = ds.describe(pdata.DataSource.parse(None, "/root"))
    assert tfds_line.startswith(f"{name}: TFDS") and tfds_line.endswith("prepared under /root.")
    assert tfds_line == pdata.describe_source(name, data_dir="/root")
    # Supported settings pass, unsupported ones raise naming the dataset.
    ds.check_settings()
    if ds.augmentations:
        ds.check_settings(augment=True)
    else:
        with pytest.raises(ValueError, match=f"augment=True.*'{name}'.*cifar10, cifar100"):
            ds.check_settings(augment=True)
    if ds.takes_rot_interval:
        ds.check_settings(rot_interval=10.0)
    else:
        with pytest.raises(ValueError, match=f"rot_interval=10.0.*'{name}'.*mnist6_180"):
            ds.check_settings(rot_interval=10.0)
    with pytest.raises(ValueError, match="-1"):
        ds.check_settings(rot_interval=-1.0)


def test_supported_settings_are_the_papers():
    assert [n for n in NAMES if pdata.get_dataset(n).augmentations] == ["cifar10", "cifar100"]
    assert [n for n in NAMES if pdata.get_dataset(n).takes_rot_interval] == ["mnist6_180"]
    derived = [n for n in NAMES if pdata.get_dataset(n).derived_from]
    assert derived == ["mnist6_180", "mnist6_m", "mnist_scale"]
    assert pdata.get_dataset("pcam").num_validation(1000) == 100
    with pytest.raises(ValueError, match="'mnist_scale' has no val_fraction"):
        pdata.get_dataset("mnist_scale").num_validation(1000)


def test_registry_errors(registry):
    with pytest.raises(ValueError, match="Unknown dataset 'stl10'; expected one of .*mnist6_180"):
        pdata.get_dataset("stl10")
    with pytest.raises(ValueError, match=r"Unknown dataset \['cifar10'\]"):
        pdata.get_dataset(["cifar10"])
    with pytest.raises(ValueError, match="bad options {'size': 3} for dataset 'cifar10'"):
        pdata.get_dataset("cifar10", size=3)
    with pytest.raises(ValueError, match="dataset value and options"):
        pdata.get_dataset(pdata.get_dataset("cifar10"), size=3)
    with pytest.raises(ValueError, match="'cifar10' is already registered"):
        pdata.register_dataset("cifar10", lambda: pdata.get_dataset("cifar10"))
    with pytest.raises(ValueError, match="non-empty str"):
        pdata.register_dataset("", lambda: None)
    pdata.register_dataset("alias", lambda: pdata.get_dataset("cifar10"))
    with pytest.raises(ValueError, match="registered as 'alias' returned .*'cifar10'"):
        pdata.get_dataset("alias")


# ----------------------------------------------------------------------------- a toy dataset


def test_a_toy_dataset_is_one_class_and_one_registration(registry):
    @dataclasses.dataclass(frozen=True)
    class Stripes(pdata.Dataset):
        """Vertical (label 0) or horizontal (label 1) stripes, made in memory."""

        size: int = 12

        augmentations: ClassVar[tuple[str, ...]] = ("crop_flip",)

        def source_arrays(self, source):
            rng = np.random.default_rng(0)
            labels = rng.integers(0, 2, 2 * self.size)
            stripes = np.where(np.arange(8) % 2, 255, 0).astype(np.uint8)
            vertical = np.broadcast_to(stripes[None, :], (8, 8))
            images = np.stack([vertical.T if y else vertical for y in labels])[..., None]
            n = self.size
            return {"x_train": images[:n], "y_train": labels[:n], "x_test": images[n:],
                    "y_test": labels[n:]}  # fmt: skip

        def describe_tfds(self, root):
            return "made in memory, nothing downloaded"

    spec = pdata.DatasetSpec("stripes", (8, 8, 1), 2, (0.5,), (0.5,), 12, True, "-", (1, 4))
    pdata.register_dataset("stripes", lambda size=12: Stripes(spec, size=size))

    config = TrainConfig(dataset="stripes", model=ModelConfig(), batch_size=3, augment=True)
    splits = pdata.load_splits(config)
    assert splits.spec == spec == pdata.get_spec("stripes")
    assert [s.num_examples for s in (splits.train, splits.validation, splits.test)] == [9, 3, 12]
    batch = next(splits.train.epoch(0))
    assert batch["image"].shape == (3, 8, 8, 1) and set(np.unique(batch["image"])) <= {-1, 1}
    assert pdata.get_dataset("stripes", size=20).size == 20
    assert pdata.describe_source("stripes").startswith("stripes: made in memory")
    with pytest.raises(ValueError, match="rot_interval=5.0.*'stripes'"):
        TrainConfig(dataset="stripes", model=ModelConfig(), rot_interval=5.0)


# ----------------------------------------------------------------------------- no branching

_QUOTED = "|".join(re.escape(n) for n in NAMES)
_BRANCHING = [
    rf"(==|!=)\s*[\"']({_QUOTED})[\"']",
    rf"[\"']({_QUOTED})[\"']\s*(==|!=)",
    rf"\b(if|elif|while|and|or|not)\b.*\bin\s*[(\[{{]\s*[\"']({_QUOTED})[\"']",
]


def test_the_branching_patterns_catch_branching():
    caught = [
        'if config.dataset == "cifar10":',
        "if 'pcam' != name:",
        'if dataset not in ("cifar10", "cifar100"):',
        "x = 1 if name in ['mnist6_180'] else 2",
    ]
    for line in caught:
        assert any(re.search(p, line) for p in _BRANCHING), line
    for line in (
        'DATASETS = ("mnist6_180", "mnist6_m")',
        "if dataset not in datasets:",
        'for ds in ("rotmnist", "cifar10"):',
    ):
        assert not any(re.search(p, line) for p in _BRANCHING), line


def test_no_dataset_branching_outside_data():
    hits = []
    for folder in ("pgcnn_jax", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.parent.name == "data" and path.parent.parent.name == "pgcnn_jax":
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if any(re.search(p, line) for p in _BRANCHING):
                    hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "dataset branching outside pgcnn_jax/data:\n" + "\n".join(hits)
