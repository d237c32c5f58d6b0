"""Deterministic, resumable batch iterators over numpy arrays or a streamed TFDS split."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["ArrayLoader", "Batch", "Loader", "StreamingLoader", "normalize"]

Batch = dict[str, np.ndarray]
"""``{"image": float32 [B, H, W, C], "label": int32 [B]}``."""

# Salts keep the shuffling, augmentation and streaming streams of one (seed, epoch) apart.
_SHUFFLE, _AUGMENT, _STREAM = 0, 1, 2


def _check_nonneg_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``uint8 [..., C]`` -> ``float32`` ``(x / 255 - mean) / std`` per channel."""
    mean_ = np.asarray(mean, dtype=np.float32)
    std_ = np.asarray(std, dtype=np.float32)
    return (images.astype(np.float32) / np.float32(255.0) - mean_) / std_


def _augment_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    """Random crop (``pad`` zero pixels each side) and horizontal flip, ``uint8 [B,H,W,C]``."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oy = rng.integers(0, 2 * pad + 1, size=b)
    ox = rng.integers(0, 2 * pad + 1, size=b)
    flip = rng.random(b) < 0.5
    rows = oy[:, None] + np.arange(h)[None]
    cols = np.where(flip[:, None], np.arange(w)[::-1][None], np.arange(w)[None]) + ox[:, None]
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


class Loader(Protocol):
    """What the trainer needs from a split: sizes and a re-creatable batch iterator."""

    @property
    def num_examples(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def steps_per_epoch(self) -> int: ...

    def epoch(self, epoch_index: int = 0, *, start_step: int = 0) -> Iterator[Batch]: ...


class _Batches:
    """What both loaders share: normalisation, batch size, training or evaluation order, seed
    and the step count (training drops the last incomplete batch, so it needs one whole batch:
    ``where`` names the data in that error)."""

    def __init__(self, num_examples: int, *, mean, std, batch_size, train, seed, where=""):
        if _check_nonneg_int("batch_size", batch_size) == 0:
            raise ValueError("batch_size must be positive, got 0")
        self._num_examples = num_examples
        self._mean, self._std = tuple(mean), tuple(std)
        self._batch_size = batch_size
        self._train = train
        self._seed = _check_nonneg_int("seed", seed)
        if train and num_examples < batch_size:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {num_examples} training examples{where}; "
                "with drop_last no batch would remain"
            )

    @property
    def num_examples(self) -> int:
        return self._num_examples

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def steps_per_epoch(self) -> int:
        n, b = self._num_examples, self._batch_size
        return n // b if self._train else math.ceil(n / b)


class ArrayLoader(_Batches):
    """Batches over in-memory ``uint8`` images.

    Training loaders (``train=True``) shuffle with a permutation drawn from
    ``np.random.default_rng([seed, epoch_index, 0])`` and drop the last incomplete batch;
    ``steps_per_epoch = floor(N / B)``. Evaluation loaders keep the stored order and the last,
    smaller batch; ``steps_per_epoch = ceil(N / B)``. Every batch is a pure function of
    ``(seed, epoch_index, step)``, so ``epoch(e, start_step=k)`` equals ``epoch(e)`` without its
    first ``k`` batches and costs nothing for the skipped ones.

    Args:
        images: ``uint8 [N, H, W, C]``.
        labels: Integer ``[N]``.
        mean, std: Per-channel normalisation constants.
        batch_size: Examples per batch.
        train: Shuffle + drop last (training) or in order (evaluation).
        seed: Shuffling / augmentation seed (training only).
        augment: Random crop with 4-pixel zero padding and horizontal flip per training batch,
            from ``np.random.default_rng([seed, epoch_index, step, 1])``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        train: bool,
        seed: int = 0,
        augment: bool = False,
    ):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        if augment and not train:
            raise ValueError("augment=True is only meaningful for a training loader")
        norm = {"mean": mean, "std": std, "batch_size": batch_size}
        super().__init__(len(images), **norm, train=train, seed=seed)
        self._images = images
        self._labels = np.asarray(labels, dtype=np.int32)
        self._augment = augment

    @property
    def images(self) -> np.ndarray:
        """The stored ``uint8 [N, H, W, C]`` images, in storage order."""
        return self._images

    @property
    def labels(self) -> np.ndarray:
        """The stored ``int32 [N]`` labels, in storage order."""
        return self._labels

    def order(self, epoch_index: int = 0) -> np.ndarray:
        """Indices into the stored arrays in the order epoch ``epoch_index`` visits them."""
        epoch_index = _check_nonneg_int("epoch_index", epoch_index)
        if not self._train:
            return np.arange(self.num_examples)
        rng = np.random.default_rng([self._seed, epoch_index, _SHUFFLE])
        return rng.permutation(self.num_examples)

    def epoch(self, epoch_index: int = 0, *, start_step: int = 0) -> Iterator[Batch]:
        """Yields the batches of epoch ``epoch_index`` from step ``start_step`` on."""
        start_step = _check_nonneg_int("start_step", start_step)
        order = self.order(epoch_index)
        b = self._batch_size
        for step in range(start_step, self.steps_per_epoch):
            idx = order[step * b : (step + 1) * b]
            images = self._images[idx]
            if self._augment:
                rng = np.random.default_rng([self._seed, epoch_index, step, _AUGMENT])
                images = _augment_crop_flip(images, rng, pad=4)
            yield {
                "image": normalize(images, self._mean, self._std),
                "label": self._labels[idx],
            }


class StreamingLoader(_Batches):
    """Batches streamed from a TFDS split with ``tf.data`` (for PCam; never all in memory).

    Training: files are read in an order shuffled with a seed derived from
    ``(seed, epoch_index)``, examples pass a ``shuffle(shuffle_buffer, seed=...)`` buffer, and the
    last incomplete batch is dropped. Evaluation: stored order, last batch kept. tf.data keeps
    the order deterministic, so ``epoch(e)`` yields the same batches for the same ``e``;
    ``start_step=k`` skips ``k`` batches with ``Dataset.skip`` (they are still read).

    Args:
        builder: A prepared ``tfds.core.DatasetBuilder``.
        split: TFDS split name.
        mean, std: Per-channel normalisation constants.
        batch_size, train, seed: As for :class:`ArrayLoader`.
        shuffle_buffer: Examples in the shuffle buffer (about 27 KB each for PCam).
        num_examples: Split size; read from the dataset's cardinality if ``None``.
    """

    def __init__(
        self,
        builder: Any,
        split: str,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        train: bool,
        seed: int = 0,
        shuffle_buffer: int = 10_000,
        num_examples: int | None = None,
    ):
        if num_examples is None:
            num_examples = int(builder.as_dataset(split=split).cardinality())
            if num_examples < 0:  # unknown cardinality: fall back on the metadata
                num_examples = int(builder.info.splits[split].num_examples)
        norm = {"mean": mean, "std": std, "batch_size": batch_size}
        super().__init__(num_examples, **norm, train=train, seed=seed, where=f" of split {split!r}")
        self._builder = builder
        self._split = split
        self._shuffle_buffer = _check_nonneg_int("shuffle_buffer", shuffle_buffer)

    def _dataset(self, epoch_index: int, start_step: int) -> Any:
        import tensorflow as tf
        import tensorflow_datasets as tfds

        @tf.autograph.experimental.do_not_convert
        def image_label(example):
            return example["image"], example["label"]

        if self._train:
            seq = np.random.SeedSequence([self._seed, epoch_index, _STREAM])
            file_seed, shuffle_seed = (int(s) for s in seq.generate_state(2) % (2**31 - 1))
            ds = self._builder.as_dataset(
                split=self._split,
                shuffle_files=True,
                read_config=tfds.ReadConfig(shuffle_seed=file_seed),
            )
            ds = ds.map(image_label, num_parallel_calls=tf.data.AUTOTUNE)
            if self._shuffle_buffer > 1:
                ds = ds.shuffle(
                    self._shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False
                )
        else:
            ds = self._builder.as_dataset(split=self._split, shuffle_files=False)
            ds = ds.map(image_label, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(self._batch_size, drop_remainder=self._train)
        if start_step:
            ds = ds.skip(start_step)
        return tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE))

    def epoch(self, epoch_index: int = 0, *, start_step: int = 0) -> Iterator[Batch]:
        """Yields the batches of epoch ``epoch_index`` from step ``start_step`` on."""
        epoch_index = _check_nonneg_int("epoch_index", epoch_index)
        start_step = _check_nonneg_int("start_step", start_step)
        for images, labels in self._dataset(epoch_index, start_step):
            yield {
                "image": normalize(images, self._mean, self._std),
                "label": labels.astype(np.int32),
            }
