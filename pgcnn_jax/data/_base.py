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

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np

from pgcnn_jax.data._pipeline import ArrayLoader, Loader
from pgcnn_jax.data._source import Arrays, DatasetSpec, DataSource, Sourced

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
class Dataset(Sourced):
    """One dataset (task) behind the protocol every caller uses.

    :meth:`load` reads the source arrays (:meth:`source_arrays`), derives the task
    (:meth:`derive`), splits off the validation set (:meth:`split`) and builds the loaders
    (:meth:`loaders`); a subclass overrides the steps that differ. :meth:`describe` is the
    one-line account of the source (:meth:`describe_tfds`, abstract, is the TFDS part). The
    source part (``spec``, ``derived_from``, ``source_classes``) is :class:`Sourced`'s.

    Attributes:
        augmentations: The training augmentations ``augment=True`` applies (``"crop_flip"``:
            random crop with 4-pixel zero padding and horizontal flip); empty: ``augment`` is
            not supported.
    """

    augmentations: ClassVar[tuple[str, ...]] = ()

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
