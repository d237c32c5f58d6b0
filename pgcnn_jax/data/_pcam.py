"""PatchCamelyon (REFERENCE 6): streamed from TFDS with ``tf.data`` (its own validation
split), or held in memory from an ``npz`` (1/10 of the training set held out)."""

from __future__ import annotations

import dataclasses

from pgcnn_jax.data._base import (
    Dataset,
    DatasetSpec,
    DataSource,
    LoadSettings,
    Splits,
    register_dataset,
)
from pgcnn_jax.data._pipeline import StreamingLoader

__all__ = ["Pcam"]


@dataclasses.dataclass(frozen=True)
class Pcam(Dataset):
    """PCam: 262 144 / 32 768 / 32 768 96x96 patches; from TFDS every split is streamed
    (:class:`StreamingLoader`, ``settings.shuffle_buffer`` examples)."""

    def load(self, source: DataSource, settings: LoadSettings) -> Splits:
        if source.npz is not None:
            return super().load(source, settings)
        self.check_settings(augment=settings.augment, rot_interval=settings.rot_interval)
        builder = self.prepared_builder(source)
        train, validation, test = (
            StreamingLoader(
                builder,
                split,
                train=split == "train",
                seed=settings.seed,
                shuffle_buffer=settings.shuffle_buffer,
                mean=self.spec.mean,
                std=self.spec.std,
                batch_size=settings.batch_size,
            )
            for split in ("train", "validation", "test")
        )
        return Splits(spec=self.spec, train=train, validation=validation, test=test)

    def describe_tfds(self, root: str) -> str:
        return "TFDS 'patch_camelyon' (~7.5 GB download), streamed from disk"


PCAM = DatasetSpec(
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
)

register_dataset("pcam", lambda: Pcam(PCAM))
