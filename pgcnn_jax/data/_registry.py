"""Static description of every dataset used in the paper (REFERENCE 6) and of MNIST-scale."""

from __future__ import annotations

import dataclasses

__all__ = ["DATASET_NAMES", "DatasetSpec", "get_spec"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model and a schedule need to know about a dataset.

    Attributes:
        name: Registry name, e.g. ``"cifar10"``.
        image_shape: ``(H, W, C)`` of one image (channels last).
        num_classes: Number of labels.
        mean: Per-channel mean subtracted after scaling ``uint8 / 255``.
        std: Per-channel standard deviation divided after subtracting ``mean``.
        nominal_train_size: ``DATASET_SIZES`` entry of the original code, used for the
            learning-rate and Gumbel-temperature schedules (REFERENCE 5.3, 1.7).
        has_validation: ``False`` where the original uses the test set as validation set
            (MNIST6-180, MNIST6-M; REFERENCE 5.4).
        tfds_name: Name of the TFDS builder the data comes from.
        val_fraction: ``(numerator, denominator)`` of the training set held out as validation
            set (seed 42) or ``None`` if the source has its own validation split / none, or
            the derivation draws it (MNIST-scale).
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    nominal_train_size: int
    has_validation: bool
    tfds_name: str
    val_fraction: tuple[int, int] | None


_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)

_SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist6_180",
            image_shape=(28, 28, 1),
            num_classes=2,
            mean=_MNIST_MEAN,
            std=_MNIST_STD,
            nominal_train_size=11836,
            has_validation=False,
            tfds_name="mnist",
            val_fraction=None,
        ),
        DatasetSpec(
            name="mnist6_m",
            image_shape=(28, 28, 1),
            num_classes=2,
            mean=_MNIST_MEAN,
            std=_MNIST_STD,
            nominal_train_size=11836,
            has_validation=False,
            tfds_name="mnist",
            val_fraction=None,
        ),
        DatasetSpec(
            name="rotmnist",
            image_shape=(28, 28, 1),
            num_classes=10,
            mean=(0.13,),
            std=(0.2970,),
            nominal_train_size=10000,
            has_validation=True,
            tfds_name="rotated_mnist",
            val_fraction=(1, 6),  # 12000 -> 10000 / 2000
        ),
        DatasetSpec(
            name="cifar10",
            image_shape=(32, 32, 3),
            num_classes=10,
            # ImageNet statistics, as in the original (REFERENCE 6).
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            nominal_train_size=45000,
            has_validation=True,
            tfds_name="cifar10",
            val_fraction=(1, 10),  # 50000 -> 45000 / 5000
        ),
        DatasetSpec(
            name="cifar100",
            image_shape=(32, 32, 3),
            num_classes=100,
            # CIFAR-10 statistics, as in the original (REFERENCE 6).
            mean=(0.49137, 0.48235, 0.44667),
            std=(0.24706, 0.24353, 0.26157),
            nominal_train_size=45000,
            has_validation=True,
            tfds_name="cifar100",
            val_fraction=(1, 10),
        ),
        DatasetSpec(
            name="pcam",
            image_shape=(96, 96, 3),
            num_classes=2,
            mean=(0.701, 0.538, 0.692),
            std=(0.235, 0.277, 0.213),
            nominal_train_size=262144,
            has_validation=True,
            tfds_name="patch_camelyon",
            # TFDS has a validation split; only ``npz:`` inputs are split (10 %).
            val_fraction=(1, 10),
        ),
        DatasetSpec(
            # Derived from plain MNIST (train and test pooled); the validation split is drawn
            # with the others by the derivation. Plain MNIST's statistics, as MNIST6 (the
            # shrunk digits themselves have less ink: mean ~0.06).
            name="mnist_scale",
            image_shape=(28, 28, 1),
            num_classes=10,
            mean=_MNIST_MEAN,
            std=_MNIST_STD,
            nominal_train_size=10000,
            has_validation=True,
            tfds_name="mnist",
            val_fraction=None,
        ),
    )
}

DATASET_NAMES: tuple[str, ...] = tuple(_SPECS)


def get_spec(name: str) -> DatasetSpec:
    """Returns the :class:`DatasetSpec` registered under ``name``.

    Raises:
        ValueError: If ``name`` is not one of :data:`DATASET_NAMES`.

    >>> get_spec("cifar10").image_shape
    (32, 32, 3)
    """
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}."
        ) from None
