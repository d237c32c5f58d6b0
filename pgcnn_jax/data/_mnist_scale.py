"""MNIST-scale (Sosnovik, Szmaja & Smeulders, ICLR 2020; Ghosh & Gupta 2019), derived from
plain MNIST: every digit shrunk about the image centre by its own random factor and padded
back to its size."""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import NamedTuple

import numpy as np

from pgcnn_jax.data._base import Arrays, Dataset, DatasetSpec, LoadSettings, Parts, register_dataset
from pgcnn_jax.data._mnist6 import MNIST_MEAN, MNIST_STD
from pgcnn_jax.data._npz import load_npz

__all__ = [
    "MNIST_SCALE_RANGE",
    "MNIST_SCALE_SIZES",
    "MnistScale",
    "MnistScaleSplit",
    "derive_mnist_scale",
    "mnist_scale_sizes",
    "rescale_area",
]

MNIST_SCALE_SIZES = (10_000, 2_000, 50_000)
"""Train / validation / test sizes of the SESN protocol, drawn from MNIST train + test."""

MNIST_SCALE_RANGE = (0.3, 1.0)
"""Scale factors are drawn uniformly from this interval."""

_CHUNK = 2048  # images per batched matrix product (bounds the weight arrays to ~25 MB)


def _area_weights(size: int, factors: np.ndarray) -> np.ndarray:
    """``[N, size, size]`` weights ``w[n, i, j]`` of input pixel ``j`` in output pixel ``i``.

    Pixel ``k`` covers ``[k - 1/2, k + 1/2]``; output pixel ``i`` of an image scaled by ``s``
    about ``c = (size - 1) / 2`` sees the input interval ``c + ([i - 1/2, i + 1/2] - c) / s``
    (length ``1 / s``); the weight is ``s`` times its overlap with input pixel ``j``.
    """
    c = (size - 1) / 2.0
    k = np.arange(size, dtype=np.float64)
    s = factors[:, None]
    lo = (c + (k - 0.5 - c) / s)[:, :, None]  # [N, i, 1]
    hi = (c + (k + 0.5 - c) / s)[:, :, None]
    overlap = np.minimum(hi, k + 0.5) - np.maximum(lo, k - 0.5)  # [N, i, j]
    return np.clip(overlap, 0.0, None) * s[:, :, None]


def rescale_area(images: np.ndarray, factors: np.ndarray | float) -> np.ndarray:
    """Scales ``uint8`` images about their centre by ``factors``, keeping their size.

    Area resampling: the image is taken as constant on each pixel's square and every output
    pixel is the mean of the input over its pre-image, a square of side ``1 / s`` centred on

    .. math::

        c + \\frac{p - c}{s}, \\qquad c = \\Big(\\frac{H - 1}{2}, \\frac{W - 1}{2}\\Big),

    with zero outside the input. For ``s < 1`` the digit shrinks by ``s`` and the border is
    padded with zeros (an anti-aliased downscale that keeps the total ink times ``s^2``);
    ``s = 1`` is the identity; ``s > 1`` enlarges and crops. The map is separable, so each
    image is ``W_s X W_s^T`` with a ``[H, H]`` and a ``[W, W]`` weight matrix.

    Args:
        images: ``uint8`` ``[N, H, W]`` or ``[N, H, W, C]``.
        factors: One scale factor ``s > 0`` per image, shape ``[N]`` (or a scalar).

    Returns:
        The scaled images, ``uint8`` with the shape of ``images`` (rounded and clipped).
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got dtype {images.dtype}")
    n, h, w = images.shape[:3]
    s = np.broadcast_to(np.asarray(factors, dtype=np.float64), (n,))
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"scale factors must be finite and > 0, got factors[{i}] = {s[i]}")
    img = images.reshape(n, h, w, -1)
    out = np.empty(img.shape, dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        rows, cols = _area_weights(h, s[sl]), _area_weights(w, s[sl])
        x = img[sl].astype(np.float64)
        y = np.einsum("nij,njkc->nikc", rows, x)
        y = np.einsum("nikc,nlk->nilc", y, cols)
        out[sl] = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return out.reshape(images.shape)


def mnist_scale_sizes(num_images: int) -> tuple[int, int, int]:
    """Train / validation / test sizes drawn from ``num_images`` pooled MNIST digits.

    ``(10 000, 2 000, 50 000)`` when at least 62 000 are available (full MNIST has 70 000;
    the rest is unused, as in SESN). With fewer, the three are scaled down in proportion:
    train ``floor(n * 10 / 62)``, validation ``floor(n * 2 / 62)``, test the rest (every
    digit is used), e.g. 5 000 -> ``(806, 161, 4 033)``.

    Raises:
        ValueError: If ``num_images`` is too small for one validation digit (``< 31``).
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int | np.integer):
        raise ValueError(f"num_images must be an int, got {num_images!r}")
    total = sum(MNIST_SCALE_SIZES)
    if num_images >= total:
        return MNIST_SCALE_SIZES
    train = num_images * MNIST_SCALE_SIZES[0] // total
    val = num_images * MNIST_SCALE_SIZES[1] // total
    if val < 1:
        raise ValueError(
            f"MNIST-scale needs at least {math.ceil(total / MNIST_SCALE_SIZES[1])} source "
            f"digits (one per validation split), got {num_images}"
        )
    return int(train), int(val), int(num_images - train - val)


class MnistScaleSplit(NamedTuple):
    """One split of MNIST-scale.

    Attributes:
        images: ``uint8 [M, H, W, C]`` rescaled digits.
        labels: ``int32 [M]`` digit labels (those of the source digits).
        factors: ``float64 [M]`` scale factor of each digit.
        source_index: ``int64 [M]`` index of each digit in the pooled source arrays.
    """

    images: np.ndarray
    labels: np.ndarray
    factors: np.ndarray
    source_index: np.ndarray


def derive_mnist_scale(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = MNIST_SCALE_RANGE,
) -> dict[str, MnistScaleSplit]:
    """Builds MNIST-scale from pooled plain MNIST digits.

    A permutation of the ``N`` source digits from ``rng`` gives the train, validation and
    test digits (sizes :func:`mnist_scale_sizes`, in that order); then every selected digit
    draws its own factor ``s ~ U[scale_range)`` from ``rng`` and is rescaled by
    :func:`rescale_area`. The SESN protocol pools MNIST train and test the same way (it
    stratifies the split by label and resamples bicubically; we do neither). The result is a
    pure function of the inputs and the state of ``rng``.

    Args:
        images: ``uint8`` ``[N, H, W, C]`` (or ``[N, H, W]``) plain MNIST digits, train and
            test pooled.
        labels: Integer digit labels ``[N]``.
        rng: Generator for the split and the factors.
        scale_range: ``(low, high)`` with ``0 < low <= high``.

    Returns:
        ``{"train": ..., "validation": ..., "test": ...}`` of :class:`MnistScaleSplit`.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    low, high = (float(v) for v in scale_range)
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if images.ndim == 3:
        images = images[..., None]
    sizes = mnist_scale_sizes(len(images))
    chosen = rng.permutation(len(images))[: sum(sizes)]
    factors = rng.uniform(low, high, size=len(chosen))
    out = {}
    start = 0
    for name, size in zip(("train", "validation", "test"), sizes, strict=True):
        idx = chosen[start : start + size]
        f = factors[start : start + size]
        out[name] = MnistScaleSplit(
            images=np.ascontiguousarray(rescale_area(images[idx], f)),
            labels=labels[idx].astype(np.int32),
            factors=f,
            source_index=idx.astype(np.int64),
        )
        start += size
    return out


@dataclasses.dataclass(frozen=True)
class MnistScale(Dataset):
    """MNIST-scale: plain MNIST train and test pooled, then split and rescaled per seed by
    :func:`derive_mnist_scale` (seed ``s`` is realisation ``s``, like the SESN protocol's
    dataset seeds); the derivation draws the validation split with the others."""

    derived_from = "plain MNIST (10 classes)"
    source_classes = 10

    def split(self, arrays: Arrays, settings: LoadSettings) -> Parts:
        parts = derive_mnist_scale(
            np.concatenate([arrays["x_train"], arrays["x_test"]]),
            np.concatenate([arrays["y_train"], arrays["y_test"]]),
            rng=np.random.default_rng([settings.seed, zlib.crc32(b"mnist_scale")]),
        )
        train, validation, test = (parts[k] for k in ("train", "validation", "test"))
        return Parts(
            (train.images, train.labels),
            (validation.images, validation.labels),
            (test.images, test.labels),
        )

    def describe_npz(self, path: str) -> str:
        arrays = load_npz(path, num_classes=10, image_shape=self.spec.image_shape)  # plain MNIST
        count = len(arrays["x_train"]) + len(arrays["x_test"])
        return super().describe_npz(path) + _describe_sizes(count)

    def describe_tfds(self, root: str) -> str:
        return "TFDS 'mnist' (~11 MB)" + _describe_sizes(70_000)


def _describe_sizes(num_images: int) -> str:
    train, val, test = mnist_scale_sizes(num_images)
    low, high = MNIST_SCALE_RANGE
    return (
        f", train and test pooled ({num_images} digits): {train} / {val} / {test} "
        f"train / validation / test digits drawn per seed, each shrunk about the centre by its "
        f"own factor from U[{low}, {high}) (area resampling) and zero-padded to 28x28"
    )


MNIST_SCALE = DatasetSpec(
    # Plain MNIST's statistics, as MNIST6 (the shrunk digits themselves have less ink: mean
    # ~0.06).
    name="mnist_scale",
    image_shape=(28, 28, 1),
    num_classes=10,
    mean=MNIST_MEAN,
    std=MNIST_STD,
    nominal_train_size=10000,
    has_validation=True,
    tfds_name="mnist",
    val_fraction=None,
)

register_dataset("mnist_scale", lambda: MnistScale(MNIST_SCALE))
