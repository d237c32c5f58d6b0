"""Datasets of the paper as deterministic, resumable numpy batch iterators.

``load_dataset(name, batch_size=...)`` returns :class:`Splits` with ``train``, ``validation``
and ``test`` loaders; ``loader.epoch(e, start_step=k)`` yields
``{"image": float32 [B, H, W, C], "label": int32 [B]}`` batches, normalised per channel.
Sources are TFDS (MNIST, CIFAR-10/100, PatchCamelyon and our ``rotated_mnist`` builder) or a
local ``npz:PATH``; MNIST6 and MNIST-scale are derived from plain MNIST on the fly.
TensorFlow is imported only when TFDS is used.
"""

from typing import Any

from pgcnn_jax.data._load import (
    VALIDATION_SPLIT_SEED,
    Splits,
    describe_source,
    load_dataset,
    train_validation_split,
)
from pgcnn_jax.data._mnist6 import derive_mnist6, rotate_bilinear
from pgcnn_jax.data._mnist_scale import (
    MNIST_SCALE_RANGE,
    MNIST_SCALE_SIZES,
    MnistScaleSplit,
    derive_mnist_scale,
    mnist_scale_sizes,
    rescale_area,
)
from pgcnn_jax.data._npz import NPZ_KEYS, load_npz
from pgcnn_jax.data._pipeline import ArrayLoader, Batch, Loader, StreamingLoader, normalize
from pgcnn_jax.data._registry import DATASET_NAMES, DatasetSpec, get_spec

__all__ = [
    "DATASET_NAMES",
    "MNIST_SCALE_RANGE",
    "MNIST_SCALE_SIZES",
    "NPZ_KEYS",
    "VALIDATION_SPLIT_SEED",
    "ArrayLoader",
    "Batch",
    "DatasetSpec",
    "Loader",
    "MnistScaleSplit",
    "RotatedMnist",
    "Splits",
    "StreamingLoader",
    "derive_mnist6",
    "derive_mnist_scale",
    "describe_source",
    "get_spec",
    "load_dataset",
    "load_npz",
    "mnist_scale_sizes",
    "normalize",
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
