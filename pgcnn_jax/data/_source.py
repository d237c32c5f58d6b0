"""A dataset's source: where its arrays come from (TFDS or a local ``npz``) and the line that
says so. :class:`Sourced` is the part of the dataset protocol (:class:`~pgcnn_jax.data.Dataset`)
that reads the source arrays and describes them."""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Any, ClassVar

import numpy as np

from pgcnn_jax.data._npz import load_npz

__all__ = ["Arrays", "DataSource", "DatasetSpec", "Sourced"]

Arrays = dict[str, np.ndarray]
"""``{"x_train": uint8 [N, H, W, C], "y_train": int32 [N], "x_test": ..., "y_test": ...}``."""


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


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where a dataset's arrays come from: a local ``npz`` archive, else TFDS under
    ``data_dir`` (``None``: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""

    npz: str | None = None
    data_dir: str | None = None

    @classmethod
    def parse(cls, data: str | None = None, data_dir: str | os.PathLike | None = None):
        """The source of ``data`` (``None`` / ``"tfds"`` or ``"npz:PATH"``) and ``data_dir``."""
        data_dir = None if data_dir is None else os.fspath(data_dir)
        if data is None or data == "tfds":
            return cls(None, data_dir)
        if isinstance(data, str) and data.startswith("npz:") and len(data) > 4:
            return cls(os.path.expanduser(data[4:]), data_dir)
        raise ValueError(f"data must be None, 'tfds' or 'npz:PATH', got {data!r}")

    @property
    def tfds_root(self) -> str:
        """The TFDS data directory, as the description line names it."""
        return self.data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class Sourced(abc.ABC):
    """A dataset's spec and source: reading the source arrays, describing them.

    Attributes:
        spec: The dataset's static description.
        derived_from: What the source arrays hold when the task is derived from another
            dataset (e.g. ``"plain MNIST (10 classes)"``), ``None`` when they hold the task.
        source_classes: Label count of those source arrays (``None``: ``spec.num_classes``).
    """

    spec: DatasetSpec

    derived_from: ClassVar[str | None] = None
    source_classes: ClassVar[int | None] = None

    @property
    def name(self) -> str:
        return self.spec.name

    def tfds_builder(self, data_dir: str | None) -> Any:
        """The (unprepared) TFDS builder of the source."""
        import tensorflow_datasets as tfds

        return tfds.builder(self.spec.tfds_name, data_dir=data_dir)

    def prepared_builder(self, source: DataSource) -> Any:
        """:meth:`tfds_builder`, downloaded and prepared (fails fast offline)."""
        from pgcnn_jax.data._tfds import prepare

        return prepare(self.tfds_builder(source.data_dir), self.spec.tfds_name)

    def source_arrays(self, source: DataSource) -> Arrays:
        """The source's train and test arrays (validated for an ``npz``)."""
        if source.npz is not None:
            classes = self.spec.num_classes if self.source_classes is None else self.source_classes
            return load_npz(source.npz, num_classes=classes, image_shape=self.spec.image_shape)
        from pgcnn_jax.data._tfds import split_arrays

        builder = self.prepared_builder(source)
        out = {}
        for split in ("train", "test"):
            out[f"x_{split}"], out[f"y_{split}"] = split_arrays(builder, split)
        return out

    def describe(self, source: DataSource) -> str:
        """One line saying where the data come from and what is downloaded."""
        if source.npz is not None:
            return (
                f"{self.name}: local npz {source.npz} (keys x_train, y_train, x_test, y_test) "
                f"holding {self.describe_npz(source.npz)}; nothing is downloaded."
            )
        root = source.tfds_root
        return f"{self.name}: {self.describe_tfds(root)}; prepared under {root}."

    def describe_npz(self, path: str) -> str:
        """What an ``npz`` source holds."""
        del path
        if self.derived_from is not None:
            return f"{self.derived_from} from which the task is derived"
        return f"{self.name} itself"

    @abc.abstractmethod
    def describe_tfds(self, root: str) -> str:
        """What is downloaded from TFDS (and how big it is) into ``root``."""
