"""Datasets of the paper as types behind one protocol, with deterministic, resumable numpy
batch iterators.

A dataset is a value of its own type (:class:`Dataset`, ``pgcnn_jax/data/_base.py``): its
spec, sources (TFDS or ``npz``), derivation, validation split, supported settings and
description line. Registered: ``mnist6_180``, ``mnist6_m`` (derived from plain MNIST),
``rotmnist`` (our ``rotated_mnist`` TFDS builder), ``cifar10``, ``cifar100``, ``pcam``
(streamed from TFDS) and ``mnist_scale`` (derived from plain MNIST). A new dataset is one file
with a :class:`Dataset` subclass and a :func:`register_dataset` call, imported below.

``load_splits(config)`` (or ``load_dataset(name, batch_size=...)``) returns :class:`Splits`
with ``train``, ``validation`` and ``test`` loaders; ``loader.epoch(e, start_step=k)`` yields
``{"image": float32 [B, H, W, C], "label": int32 [B]}`` batches, normalised per channel.
TensorFlow is imported only when TFDS is used.
"""

from typing import Any

from pgcnn_jax.data import _cifar, _mnist6, _mnist_scale, _pcam, _rotmnist_dataset  # noqa: F401
from pgcnn_jax.data._base import (
    VALIDATION_SPLIT_SEED,
    Dataset,
    DatasetSpec,
    DataSource,
    LoadSettings,
    Parts,
    Splits,
    get_dataset,
    get_spec,
    register_dataset,
    registered_names,
    train_validation_split,
)
from pgcnn_jax.data._cifar import Cifar
from pgcnn_jax.data._load import describe_source, load_dataset, load_splits
from pgcnn_jax.data._mnist6 import ExactAction, Mnist6, derive_mnist6, rotate_bilinear
from pgcnn_jax.data._mnist_scale import (
    MNIST_SCALE_RANGE,
    MNIST_SCALE_SIZES,
    MnistScale,
    MnistScaleSplit,
    derive_mnist_scale,
    mnist_scale_sizes,
    rescale_area,
)
from pgcnn_jax.data._npz import NPZ_KEYS, load_npz
from pgcnn_jax.data._pcam import Pcam
from pgcnn_jax.data._pipeline import ArrayLoader, Batch, Loader, StreamingLoader, normalize
from pgcnn_jax.data._rotmnist_dataset import RotMnist

_PAPER_ORDER = ("mnist6_180", "mnist6_m", "rotmnist", "cifar10", "cifar100", "pcam")
#: names of the datasets registered by this package (:func:`get_dataset`): the paper's six,
#: then the others in registration order
DATASET_NAMES: tuple[str, ...] = _PAPER_ORDER + tuple(
    n for n in registered_names() if n not in _PAPER_ORDER
)

__all__ = [
    "DATASET_NAMES",
    "MNIST_SCALE_RANGE",
    "MNIST_SCALE_SIZES",
    "NPZ_KEYS",
    "VALIDATION_SPLIT_SEED",
    "ArrayLoader",
    "Batch",
    "Cifar",
    "DataSource",
    "Dataset",
    "DatasetSpec",
    "ExactAction",
    "LoadSettings",
    "Loader",
    "Mnist6",
    "MnistScale",
    "MnistScaleSplit",
    "Parts",
    "Pcam",
    "RotMnist",
    "RotatedMnist",
    "Splits",
    "StreamingLoader",
    "derive_mnist6",
    "derive_mnist_scale",
    "describe_source",
    "get_dataset",
    "get_spec",
    "load_dataset",
    "load_npz",
    "load_splits",
    "mnist_scale_sizes",
    "normalize",
    "register_dataset",
    "registered_names",
    "rescale_area",
    "rotate_bilinear",
    "train_validation_split",
]


def __getattr__(name: str) -> Any:
    # The TFDS builder imports tensorflow_datasets (and TensorFlow); load it on first use.
    if name == "RotatedMnist":
        from pgcnn_jax.data._rotmnist import RotatedMnist

        return RotatedMnist
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
