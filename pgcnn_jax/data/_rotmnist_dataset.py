"""RotMNIST (``mnist_rotation_new``, Larochelle et al. 2007; REFERENCE 6): our TFDS builder
``rotated_mnist`` (:mod:`pgcnn_jax.data._rotmnist`, imported on first use) or an ``npz``;
1/6 of the 12 000 training digits held out (seed 42)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pgcnn_jax.data._base import Dataset, DatasetSpec, register_dataset

__all__ = ["TEST_FILE", "TRAIN_FILE", "URL", "ZIP_NAME", "RotMnist"]

URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
ZIP_NAME = "mnist_rotation_new.zip"
TRAIN_FILE = "mnist_all_rotation_normalized_float_train_valid.amat"
TEST_FILE = "mnist_all_rotation_normalized_float_test.amat"


@dataclasses.dataclass(frozen=True)
class RotMnist(Dataset):
    """RotMNIST: 12 000 rotated training digits (10 000 / 2 000 after the split), 50 000 test
    digits."""

    def tfds_builder(self, data_dir: str | None) -> Any:
        from pgcnn_jax.data._rotmnist import RotatedMnist

        return RotatedMnist(data_dir=data_dir)

    def describe_tfds(self, root: str) -> str:
        return (
            f"TFDS builder 'rotated_mnist' (pgcnn_jax) downloading {URL} (~56 MB); offline: "
            f"place {ZIP_NAME} in {root}/downloads/manual/"
        )


ROTMNIST = DatasetSpec(
    name="rotmnist",
    image_shape=(28, 28, 1),
    num_classes=10,
    mean=(0.13,),
    std=(0.2970,),
    nominal_train_size=10000,
    has_validation=True,
    tfds_name="rotated_mnist",
    val_fraction=(1, 6),  # 12000 -> 10000 / 2000
)

register_dataset("rotmnist", lambda: RotMnist(ROTMNIST))
