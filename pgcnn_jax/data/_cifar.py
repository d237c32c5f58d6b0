"""CIFAR-10 and CIFAR-100 (REFERENCE 6): TFDS or ``npz``, a seeded 1/10 validation split and
the random crop + flip augmentation."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pgcnn_jax.data._base import Dataset, DatasetSpec, register_dataset

__all__ = ["Cifar"]


@dataclasses.dataclass(frozen=True)
class Cifar(Dataset):
    """CIFAR-10 / CIFAR-100: 50 000 training images split 45 000 / 5 000 (seed 42), the
    10 000 test images; ``augment=True`` crops (4-pixel zero padding) and flips."""

    augmentations: ClassVar[tuple[str, ...]] = ("crop_flip",)

    def describe_tfds(self, root: str) -> str:
        return f"TFDS '{self.spec.tfds_name}' (~170 MB download)"


def _spec(name: str, num_classes: int, mean: tuple, std: tuple) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        image_shape=(32, 32, 3),
        num_classes=num_classes,
        mean=mean,
        std=std,
        nominal_train_size=45000,
        has_validation=True,
        tfds_name=name,
        val_fraction=(1, 10),  # 50000 -> 45000 / 5000
    )


# ImageNet statistics for CIFAR-10, CIFAR-10 statistics for CIFAR-100, as in the original
# (REFERENCE 6).
CIFAR10 = _spec("cifar10", 10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR100 = _spec("cifar100", 100, (0.49137, 0.48235, 0.44667), (0.24706, 0.24353, 0.26157))

register_dataset("cifar10", lambda: Cifar(CIFAR10))
register_dataset("cifar100", lambda: Cifar(CIFAR100))
