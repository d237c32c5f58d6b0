"""The dataset protocol: what a dataset owns, and the registry of datasets by name.

A dataset is a value of its own type (a frozen :class:`Dataset` subclass) that owns everything
that depends on *which* dataset a run uses: its static description (:class:`DatasetSpec`), its
sources (a TFDS builder or a local ``npz``), how its task is derived from the source arrays, how
its validation split is made, which settings it supports (augmentation, rotation interval) and
the line that says where its data come from. Code outside :mod:`pgcnn_jax.data` only calls
these; it never branches on a dataset's name.

Adding a dataset is one file with a :class:`Dataset` subclass and a call to
:func:`register_dataset`.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np

from pgcnn_jax.data._npz import load_npz
from pgcnn_jax.data._pipeline import ArrayLoader, Loader

__all__ = [
    "VALIDATION_SPLIT_SEED",
    "DataSource",
    "Dataset",
    "DatasetSpec",
    "LoadSettings",
    "Parts",
    "Splits",
    "get_dataset",
    "get_spec",
    "register_dataset",
    "registered_names",
    "train_validation_split",
]

VALIDATION_SPLIT_SEED = 42
"""Seed of the train/validation split, fixed regardless of the run seed (REFERENCE 5.4)."""

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
class LoadSettings:
    """The run's settings that shape its loaders.

    Attributes:
        batch_size: Examples per batch for all three loaders.
        seed: Seeds the training order, augmentation and what a derivation draws (MNIST6
            ``rot_interval`` angles, the MNIST-scale realisation).
        augment: Apply the dataset's training augmentation (:attr:`Dataset.augmentations`).
        rot_interval: Degrees of fixed random rotation of the originals, where the dataset
            takes one (:attr:`Dataset.takes_rot_interval`).
        shuffle_buffer: Shuffle buffer of a streamed training split.
    """

    batch_size: int
    seed: int = 0
    augment: bool = False
    rot_interval: float = 0.0
    shuffle_buffer: int = 10_000

    def __post_init__(self):
        bs = self.batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs <= 0:
            raise ValueError(f"batch_size must be a positive int, got {bs!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")


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


class Parts(NamedTuple):
    """Train / validation / test ``(images, labels)``; ``validation`` ``None``: the test set
    serves as validation set."""

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray]


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


@dataclasses.dataclass(frozen=True)
class Dataset(abc.ABC):
    """One dataset (task) behind the protocol every caller uses.

    :meth:`load` reads the source arrays (:meth:`source_arrays`), derives the task
    (:meth:`derive`), splits off the validation set (:meth:`split`) and builds the loaders
    (:meth:`loaders`); a subclass overrides the steps that differ. :meth:`describe` is the
    one-line account of the source (:meth:`describe_tfds` is the TFDS part).

    Attributes:
        spec: Its static description.
        augmentations: The training augmentations ``augment=True`` applies (``"crop_flip"``:
            random crop with 4-pixel zero padding and horizontal flip); empty: ``augment`` is
            not supported.
        derived_from: What the source arrays hold when the task is derived from another
            dataset (e.g. ``"plain MNIST (10 classes)"``), ``None`` when they hold the task.
        source_classes: Label count of those source arrays (``None``: ``spec.num_classes``).
    """

    spec: DatasetSpec

    augmentations: ClassVar[tuple[str, ...]] = ()
    derived_from: ClassVar[str | None] = None
    source_classes: ClassVar[int | None] = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def takes_rot_interval(self) -> bool:
        """Whether ``rot_interval`` (a fixed random rotation of the originals) applies."""
        return False

    def check_settings(self, *, augment: bool = False, rot_interval: float = 0.0) -> None:
        """Raises ``ValueError`` for a setting this dataset does not support."""
        if augment and not self.augmentations:
            raise ValueError(
                f"augment=True is not supported by dataset {self.name!r}; datasets with an "
                f"augmentation: {_supporting(lambda d: bool(d.augmentations))}"
            )
        if rot_interval < 0:
            raise ValueError(f"rot_interval must be >= 0 degrees, got {rot_interval}")
        if rot_interval and not self.takes_rot_interval:
            raise ValueError(
                f"rot_interval={rot_interval} is not supported by dataset {self.name!r}; "
                f"datasets that take it: {_supporting(lambda d: d.takes_rot_interval)}"
            )

    # ------------------------------------------------------------------ sources

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

    # ------------------------------------------------------------------ derivation, splits

    def derive(self, arrays: Arrays, settings: LoadSettings) -> Arrays:
        """The task's arrays made from the source's (default: the source's themselves)."""
        del settings
        return arrays

    def split(self, arrays: Arrays, settings: LoadSettings) -> Parts:
        """Train / validation / test: ``spec.val_fraction`` of the training arrays held out
        with seed :data:`VALIDATION_SPLIT_SEED`, or none (``spec.has_validation`` false)."""
        del settings
        x, y = arrays["x_train"], arrays["y_train"]
        test = (arrays["x_test"], arrays["y_test"])
        if not self.spec.has_validation:
            return Parts((x, y), None, test)
        tr, va = train_validation_split(len(x), self.num_validation(len(x)))
        return Parts((x[tr], y[tr]), (x[va], y[va]), test)

    def num_validation(self, num_examples: int) -> int:
        """Examples of a training set of ``num_examples`` held out: ``spec.val_fraction`` of
        them, rounded half up."""
        if self.spec.val_fraction is None:
            raise ValueError(f"dataset {self.name!r} has no val_fraction to hold out")
        num, den = self.spec.val_fraction
        return (num_examples * num + den // 2) // den

    # ------------------------------------------------------------------ loaders

    def loaders(self, parts: Parts, settings: LoadSettings) -> Splits:
        """In-memory loaders (:class:`ArrayLoader`) over ``parts``."""
        norm = {"mean": self.spec.mean, "std": self.spec.std, "batch_size": settings.batch_size}
        test = ArrayLoader(*parts.test, train=False, **norm)
        validation = test
        if parts.validation is not None:
            validation = ArrayLoader(*parts.validation, train=False, **norm)
        train = ArrayLoader(
            *parts.train, train=True, seed=settings.seed, augment=settings.augment, **norm
        )
        return Splits(spec=self.spec, train=train, validation=validation, test=test)

    def load(self, source: DataSource, settings: LoadSettings) -> Splits:
        """The train / validation / test loaders of this dataset from ``source``."""
        self.check_settings(augment=settings.augment, rot_interval=settings.rot_interval)
        arrays = self.derive(self.source_arrays(source), settings)
        return self.loaders(self.split(arrays, settings), settings)

    # ------------------------------------------------------------------ description

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


# ---------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str, factory: Callable[..., Dataset]) -> None:
    """Registers ``factory`` (a function or class returning a :class:`Dataset` whose
    ``spec.name`` is ``name``) under ``name``; :func:`get_dataset` calls it with the options
    it gets. Called without options it must return the dataset's default value."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset name must be a non-empty str, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered")
    _REGISTRY[name] = factory


def registered_names() -> tuple[str, ...]:
    """Names of the registered datasets, in registration order."""
    return tuple(_REGISTRY)


def get_dataset(name: str | Dataset, **options: Any) -> Dataset:
    """Returns the dataset registered under ``name``; a :class:`Dataset` passes through.
    Keyword options configure datasets whose factory takes them.

    Raises:
        ValueError: For an unknown name or options its factory does not take.

    >>> get_dataset("cifar10").augmentations
    ('crop_flip',)
    """
    if isinstance(name, Dataset):
        if options:
            raise ValueError(f"got a dataset value and options {options}; pass the name instead")
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"Unknown dataset {name!r}; expected one of {', '.join(registered_names())}."
        )
    try:
        dataset = _REGISTRY[name](**options)
    except TypeError as e:
        raise ValueError(f"bad options {options} for dataset {name!r}: {e}") from None
    if not isinstance(dataset, Dataset) or dataset.name != name:
        raise ValueError(
            f"the factory registered as {name!r} returned {dataset!r}, not a Dataset named {name!r}"
        )
    return dataset


def get_spec(name: str) -> DatasetSpec:
    """Returns the :class:`DatasetSpec` registered under ``name``.

    Raises:
        ValueError: If ``name`` is not one of :data:`DATASET_NAMES`.

    >>> get_spec("cifar10").image_shape
    (32, 32, 3)
    """
    return get_dataset(name).spec


def _supporting(predicate: Callable[[Dataset], bool]) -> str:
    names = [n for n in registered_names() if predicate(get_dataset(n))]
    return ", ".join(names) or "none"
