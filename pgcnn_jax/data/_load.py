"""``load_dataset``: sources (TFDS or ``npz:``), derived tasks, validation split, loaders."""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any

import numpy as np

from pgcnn_jax.data._mnist6 import derive_mnist6
from pgcnn_jax.data._mnist_scale import MNIST_SCALE_RANGE, derive_mnist_scale, mnist_scale_sizes
from pgcnn_jax.data._npz import load_npz
from pgcnn_jax.data._pipeline import ArrayLoader, Loader, StreamingLoader
from pgcnn_jax.data._probe import pending_downloads, probe_hosts, remove_partial_downloads, snapshot
from pgcnn_jax.data._registry import DatasetSpec, get_spec

__all__ = [
    "VALIDATION_SPLIT_SEED",
    "Splits",
    "describe_source",
    "load_dataset",
    "train_validation_split",
]

VALIDATION_SPLIT_SEED = 42
"""Seed of the train/validation split, fixed regardless of the run seed (REFERENCE 5.4)."""

_MNIST6_TRANSFORM = {"mnist6_180": "rot180", "mnist6_m": "mirror"}
_FROM_MNIST = (*_MNIST6_TRANSFORM, "mnist_scale")  # derived from plain 10-class MNIST
_AUGMENTABLE = ("cifar10", "cifar100")


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three loaders of a dataset and its :class:`DatasetSpec`.

    For datasets without a validation split (``spec.has_validation`` is ``False``)
    ``validation`` is the test loader itself (REFERENCE 5.4).
    """

    spec: DatasetSpec
    train: Loader
    validation: Loader
    test: Loader


def train_validation_split(
    num_examples: int, num_validation: int, seed: int = VALIDATION_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Random split of ``range(num_examples)`` into sorted train and validation indices.

    A permutation from ``np.random.default_rng(seed)``: its first
    ``num_examples - num_validation`` entries are the training set, the rest the validation
    set (the layout of ``torch.utils.data.random_split``; the permutation itself differs).
    """
    if not 0 < num_validation < num_examples:
        raise ValueError(
            f"num_validation must be in (0, {num_examples}) for {num_examples} examples, "
            f"got {num_validation}"
        )
    perm = np.random.default_rng(seed).permutation(num_examples)
    n_train = num_examples - num_validation
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def _num_validation(spec: DatasetSpec, num_examples: int) -> int:
    assert spec.val_fraction is not None
    num, den = spec.val_fraction
    return (num_examples * num + den // 2) // den


def _parse_data(data: str | None) -> str | None:
    """Returns the npz path of ``data="npz:PATH"``, ``None`` for TFDS."""
    if data is None or data == "tfds":
        return None
    if isinstance(data, str) and data.startswith("npz:") and len(data) > 4:
        return os.path.expanduser(data[4:])
    raise ValueError(f"data must be None, 'tfds' or 'npz:PATH', got {data!r}")


def _tfds_builder(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> Any:
    import tensorflow_datasets as tfds

    if spec.tfds_name == "rotated_mnist":
        from pgcnn_jax.data._rotmnist import RotatedMnist

        builder = RotatedMnist(data_dir=data_dir)
    else:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)

    def unavailable(err: OSError) -> ValueError:
        return ValueError(
            f"could not download / prepare {spec.tfds_name!r} with tensorflow-datasets into "
            f"{builder.data_dir!r} ({type(err).__name__}: {err}); check the network, or pass "
            "data='npz:PATH' (--data=npz:PATH) with local arrays"
        )

    try:  # seconds, where TFDS would retry for minutes when the hosts cannot be reached
        probe_hosts(pending_downloads(builder))
    except OSError as err:
        raise unavailable(err) from err
    before = snapshot(builder)
    try:
        builder.download_and_prepare()
    except (OSError, ConnectionError) as err:  # requests' errors derive from OSError
        remove_partial_downloads(builder, before)
        raise unavailable(err) from err
    return builder


def _tfds_arrays(builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Materialises a small TFDS split as ``uint8 [N, H, W, C]`` and ``int32 [N]``."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    @tf.autograph.experimental.do_not_convert
    def image_label(example):
        return example["image"], example["label"]

    ds = builder.as_dataset(split=split, shuffle_files=False).map(image_label).batch(4096)
    images, labels = [], []
    for x, y in tfds.as_numpy(ds):
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _arrays(
    spec: DatasetSpec, npz_path: str | None, data_dir: str | os.PathLike | None
) -> dict[str, Any]:
    if npz_path is not None:
        derived = spec.name in _FROM_MNIST
        return load_npz(
            npz_path,
            num_classes=10 if derived else spec.num_classes,
            image_shape=spec.image_shape,
        )
    builder = _tfds_builder(spec, data_dir)
    out = {}
    for split in ("train", "test"):
        out[f"x_{split}"], out[f"y_{split}"] = _tfds_arrays(builder, split)
    return out


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
    """Builds the train / validation / test loaders of dataset ``name``.

    Sources: ``data="npz:PATH"`` reads a local archive (see :func:`load_npz`; for MNIST6 it
    holds plain 10-class MNIST); otherwise TFDS under ``data_dir`` (downloaded and prepared on
    first use; see :func:`describe_source`). PCam from TFDS is streamed with ``tf.data``
    (:class:`StreamingLoader`, ``shuffle_buffer`` examples); everything else is held in memory
    (:class:`ArrayLoader`).

    Validation: RotMNIST, CIFAR-10/100 hold out a random ``1/6`` resp. ``1/10`` of the
    training set (12 000 -> 10 000 / 2 000, 50 000 -> 45 000 / 5 000) with a generator seeded
    :data:`VALIDATION_SPLIT_SEED`; the same fractions apply to ``npz`` inputs of any size (and
    ``1/10`` for a PCam ``npz``). TFDS PCam uses its own ``validation`` split. MNIST6 has none:
    ``validation`` is the test loader. MNIST-scale pools the source's train and test digits
    and draws its three splits from them (:func:`~pgcnn_jax.data.derive_mnist_scale`,
    :func:`~pgcnn_jax.data.mnist_scale_sizes`).

    Args:
        name: One of :data:`DATASET_NAMES`.
        data_dir: TFDS data directory (default ``~/tensorflow_datasets``).
        data: ``None`` / ``"tfds"`` or ``"npz:PATH"``.
        batch_size: Examples per batch for all three loaders.
        seed: Seeds the training order, augmentation, MNIST6 ``rot_interval`` angles and the
            MNIST-scale realisation (its splits and scale factors: seed ``s`` is realisation
            ``s``, like the SESN protocol's dataset seeds).
        augment: Random crop (4-pixel zero padding) + horizontal flip; CIFAR only.
        rot_interval: Degrees of fixed random rotation of the original sixes; ``mnist6_180``
            only.
        shuffle_buffer: Shuffle buffer of the streamed PCam training split.

    Raises:
        ValueError: For an unknown name, an invalid ``data`` string or npz file, ``augment``
            or ``rot_interval`` on a dataset that does not support them, or a bad batch size.
    """
    spec = get_spec(name)
    if augment and name not in _AUGMENTABLE:
        raise ValueError(f"augment=True is only supported for {_AUGMENTABLE}, got {name!r}")
    if rot_interval < 0:
        raise ValueError(f"rot_interval must be >= 0 degrees, got {rot_interval}")
    if rot_interval and name != "mnist6_180":
        raise ValueError(f"rot_interval is only supported for 'mnist6_180', got {name!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    npz_path = _parse_data(data)
    norm = {"mean": spec.mean, "std": spec.std, "batch_size": batch_size}

    if name == "pcam" and npz_path is None:
        builder = _tfds_builder(spec, data_dir)
        train, validation, test = (
            StreamingLoader(
                builder,
                split,
                train=split == "train",
                seed=seed,
                shuffle_buffer=shuffle_buffer,
                **norm,
            )
            for split in ("train", "validation", "test")
        )
        return Splits(spec=spec, train=train, validation=validation, test=test)

    arrays = _arrays(spec, npz_path, data_dir)
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    if name in _MNIST6_TRANSFORM:
        kind = _MNIST6_TRANSFORM[name]
        x_train, y_train = derive_mnist6(
            x_train,
            y_train,
            transform=kind,
            rot_interval=rot_interval,
            rng=np.random.default_rng([seed, zlib.crc32(b"train")]),
        )
        x_test, y_test = derive_mnist6(
            x_test,
            y_test,
            transform=kind,
            rot_interval=rot_interval,
            rng=np.random.default_rng([seed, zlib.crc32(b"test")]),
        )
        if len(x_train) == 0 or len(x_test) == 0:
            raise ValueError(f"{name}: the source holds no digit 6 in one of its splits")
    if name == "mnist_scale":
        parts = derive_mnist_scale(
            np.concatenate([x_train, x_test]),
            np.concatenate([y_train, y_test]),
            rng=np.random.default_rng([seed, zlib.crc32(b"mnist_scale")]),
        )
        train_part, val_part, test_part = (parts[k] for k in ("train", "validation", "test"))
        return Splits(
            spec=spec,
            train=ArrayLoader(train_part.images, train_part.labels, train=True, seed=seed, **norm),
            validation=ArrayLoader(val_part.images, val_part.labels, train=False, **norm),
            test=ArrayLoader(test_part.images, test_part.labels, train=False, **norm),
        )

    test = ArrayLoader(x_test, y_test, train=False, **norm)
    if spec.has_validation:
        tr, va = train_validation_split(len(x_train), _num_validation(spec, len(x_train)))
        validation: Loader = ArrayLoader(x_train[va], y_train[va], train=False, **norm)
        x_train, y_train = x_train[tr], y_train[tr]
    else:
        validation = test
    train = ArrayLoader(x_train, y_train, train=True, seed=seed, augment=augment, **norm)
    return Splits(spec=spec, train=train, validation=validation, test=test)


def describe_source(
    name: str, data_dir: str | os.PathLike | None = None, data: str | None = None
) -> str:
    """One line saying where the data of ``name`` comes from and what is downloaded.

    For ``mnist_scale`` it states the split sizes; from an ``npz`` it reads the archive to
    count its digits (and raises the :func:`load_npz` ``ValueError`` for a bad one).
    """
    spec = get_spec(name)
    npz_path = _parse_data(data)
    if npz_path is not None:
        what = (
            "plain MNIST (10 classes) from which the task is derived"
            if (name in _FROM_MNIST)
            else f"{name} itself"
        )
        if name == "mnist_scale":
            arrays = load_npz(npz_path, num_classes=10, image_shape=spec.image_shape)
            what += _describe_mnist_scale(len(arrays["x_train"]) + len(arrays["x_test"]))
        return (
            f"{name}: local npz {npz_path} (keys x_train, y_train, x_test, y_test) holding "
            f"{what}; nothing is downloaded."
        )
    root = (
        os.fspath(data_dir)
        if data_dir
        else os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    )
    if name in _MNIST6_TRANSFORM:
        detail = "TFDS 'mnist' (~11 MB), digit 6 kept and a transformed copy appended"
    elif name == "mnist_scale":
        detail = "TFDS 'mnist' (~11 MB)" + _describe_mnist_scale(70_000)
    elif name == "rotmnist":
        from pgcnn_jax.data._rotmnist import URL, ZIP_NAME

        detail = (
            f"TFDS builder 'rotated_mnist' (pgcnn_jax) downloading {URL} (~56 MB); offline: "
            f"place {ZIP_NAME} in {root}/downloads/manual/"
        )
    elif name == "pcam":
        detail = "TFDS 'patch_camelyon' (~7.5 GB download), streamed from disk"
    else:
        detail = f"TFDS '{spec.tfds_name}' (~170 MB download)"
    return f"{name}: {detail}; prepared under {root}."


def _describe_mnist_scale(num_images: int) -> str:
    train, val, test = mnist_scale_sizes(num_images)
    low, high = MNIST_SCALE_RANGE
    return (
        f", train and test pooled ({num_images} digits): {train} / {val} / {test} "
        f"train / validation / test digits drawn per seed, each shrunk about the centre by its "
        f"own factor from U[{low}, {high}) (area resampling) and zero-padded to 28x28"
    )
