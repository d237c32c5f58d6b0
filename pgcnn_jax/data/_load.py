"""The loading entry points: ``load_splits(config)`` for a run, ``load_dataset(name, ...)``
with the settings spelled out, ``describe_source`` for the first line a run prints."""

from __future__ import annotations

import os
from typing import Any

from pgcnn_jax.data._base import DataSource, LoadSettings, Splits, get_dataset

__all__ = ["describe_source", "load_dataset", "load_splits"]


def load_splits(
    config: Any, *, data: str | None = None, data_dir: str | os.PathLike | None = None
) -> Splits:
    """The train / validation / test loaders of a run.

    Args:
        config: A :class:`~pgcnn_jax.train.TrainConfig` (read: ``dataset``, ``data``,
            ``data_dir``, ``batch_size``, ``seed``, ``augment``, ``rot_interval``).
        data, data_dir: Another source than the run's own (``None``: the config's).
    """
    return load_dataset(
        config.dataset,
        data=config.data if data is None else data,
        data_dir=config.data_dir if data_dir is None else data_dir,
        batch_size=config.batch_size,
        seed=config.seed,
        augment=config.augment,
        rot_interval=config.rot_interval,
    )


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    data: str | None = None,
    batch_size: int,
    seed: int = 0,
    augment: bool = False,
    rot_interval: float = 0.0,
    shuffle_buffer: int = 10_000,
) -> Splits:
    """Builds the train / validation / test loaders of dataset ``name``
    (``get_dataset(name).load(source, settings)``).

    Sources: ``data="npz:PATH"`` reads a local archive (see :func:`load_npz`; for MNIST6 and
    MNIST-scale it holds plain 10-class MNIST); otherwise TFDS under ``data_dir`` (downloaded
    and prepared on first use; see :func:`describe_source`). PCam from TFDS is streamed with
    ``tf.data`` (:class:`StreamingLoader`, ``shuffle_buffer`` examples); everything else is
    held in memory (:class:`ArrayLoader`).

    Validation: RotMNIST, CIFAR-10/100 hold out a random ``1/6`` resp. ``1/10`` of the
    training set (12 000 -> 10 000 / 2 000, 50 000 -> 45 000 / 5 000) with a generator seeded
    :data:`VALIDATION_SPLIT_SEED`; the same fractions apply to ``npz`` inputs of any size (and
    ``1/10`` for a PCam ``npz``). TFDS PCam uses its own ``validation`` split. MNIST6 has none:
    ``validation`` is the test loader. MNIST-scale pools the source's train and test digits
    and draws its three splits from them (:func:`~pgcnn_jax.data.derive_mnist_scale`,
    :func:`~pgcnn_jax.data.mnist_scale_sizes`).

    Args:
        name: One of :data:`DATASET_NAMES` (or any registered dataset).
        data_dir: TFDS data directory (default ``~/tensorflow_datasets``).
        data: ``None`` / ``"tfds"`` or ``"npz:PATH"``.
        batch_size: Examples per batch for all three loaders.
        seed: Seeds the training order, augmentation, MNIST6 ``rot_interval`` angles and the
            MNIST-scale realisation (its splits and scale factors: seed ``s`` is realisation
            ``s``, like the SESN protocol's dataset seeds).
        augment: The dataset's training augmentation (CIFAR: random crop with 4-pixel zero
            padding + horizontal flip); only datasets that have one.
        rot_interval: Degrees of fixed random rotation of the original sixes; ``mnist6_180``
            only.
        shuffle_buffer: Shuffle buffer of the streamed PCam training split.

    Raises:
        ValueError: For an unknown name, an invalid ``data`` string or npz file, ``augment``
            or ``rot_interval`` on a dataset that does not support them, or a bad batch size.
    """
    dataset = get_dataset(name)
    settings = LoadSettings(
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        rot_interval=rot_interval,
        shuffle_buffer=shuffle_buffer,
    )
    return dataset.load(DataSource.parse(data, data_dir), settings)


def describe_source(
    name: str, data_dir: str | os.PathLike | None = None, data: str | None = None
) -> str:
    """One line saying where the data of ``name`` comes from and what is downloaded
    (``get_dataset(name).describe(source)``).

    For ``mnist_scale`` it states the split sizes; from an ``npz`` it reads the archive to
    count its digits (and raises the :func:`load_npz` ``ValueError`` for a bad one).
    """
    return get_dataset(name).describe(DataSource.parse(data, data_dir))
