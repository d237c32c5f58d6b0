"""MNIST6-180 and MNIST6-M, derived from plain MNIST (REFERENCE 6)."""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable

import numpy as np

from pgcnn_jax.data._base import Dataset, LoadSettings, register_dataset
from pgcnn_jax.data._source import Arrays, DatasetSpec
from pgcnn_jax.groups import Group, get_group

__all__ = ["ExactAction", "Mnist6", "derive_mnist6", "rotate_bilinear"]


def rotate_bilinear(images: np.ndarray, angles_deg: np.ndarray | float) -> np.ndarray:
    """Rotates ``uint8`` images about their centre with bilinear interpolation.

    Positive angles rotate counter-clockwise as displayed (row 0 on top), like
    ``torchvision.transforms.functional.rotate``: ``rotate_bilinear(x, 90)`` equals
    ``np.rot90(x, 1, axes=(1, 2))``. The centre is ``((H - 1) / 2, (W - 1) / 2)`` in pixel
    indices; pixels whose source lies outside the image are filled with 0. Each output pixel
    ``(r, c)`` samples the input at

    .. math::

        \\begin{pmatrix} x_s \\\\ y_s \\end{pmatrix} =
        \\begin{pmatrix} \\cos\\varphi & \\sin\\varphi \\\\ -\\sin\\varphi & \\cos\\varphi
        \\end{pmatrix} \\begin{pmatrix} c - c_x \\\\ c_y - r \\end{pmatrix}.

    Args:
        images: ``uint8`` array ``[N, H, W]`` or ``[N, H, W, C]``.
        angles_deg: One angle in degrees per image, shape ``[N]`` (or a scalar).

    Returns:
        The rotated images, ``uint8`` with the shape of ``images`` (rounded and clipped).
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
    n, h, w = images.shape[:3]
    angles = np.broadcast_to(np.asarray(angles_deg, dtype=np.float64), (n,))
    phi = np.deg2rad(angles)[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x, y = cols - cx, cy - rows
    xs = np.cos(phi) * x + np.sin(phi) * y
    ys = -np.sin(phi) * x + np.cos(phi) * y
    src_r, src_c = cy - ys, xs + cx  # [N, H, W]

    r0, c0 = np.floor(src_r).astype(np.int64), np.floor(src_c).astype(np.int64)
    fr, fc = src_r - r0, src_c - c0
    img = images.astype(np.float64)
    if img.ndim == 3:
        img = img[..., None]
    batch = np.arange(n)[:, None, None]
    out = np.zeros((n, h, w, img.shape[-1]), dtype=np.float64)
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            rr, cc = r0 + dr, c0 + dc
            valid = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            vals = img[batch, np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)]
            out += (wr * wc * valid)[..., None] * vals
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.reshape(images.shape)


@dataclasses.dataclass(frozen=True)
class ExactAction:
    """The exact pixel action of one group element on images (``Group.act(exact=True)``)."""

    group: Group
    element: tuple[float, ...]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.group.act(images, self.element, exact=True))


def derive_mnist6(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    transform: Callable[[np.ndarray], np.ndarray],
    rot_interval: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Builds an MNIST6 task from MNIST images and digit labels.

    Keeps the digit 6 only and appends a transformed copy: ``transform`` maps the ``uint8``
    sixes ``[M, H, W, C]`` to their transformed copies, e.g. the rotation by exactly 180
    degrees (MNIST6-180) or the flip of the columns (MNIST6-M), both as a group's exact pixel
    action (:class:`ExactAction`; :attr:`Mnist6.transform` of the registered datasets).
    Label 0 = original, 1 = transformed; originals come first.

    Args:
        images: ``uint8`` ``[N, H, W, C]`` (or ``[N, H, W]``) MNIST images.
        labels: Integer digit labels ``[N]``.
        transform: The transformation of the copies.
        rot_interval: Degrees; if non-zero every original 6 is first rotated (bilinear) by an
            angle drawn uniformly from ``[-rot_interval, rot_interval]``, once.
        rng: Generator for those angles; required when ``rot_interval`` is non-zero.

    Returns:
        ``(images, labels)``: ``uint8`` images ``[2 M, H, W, C]`` and ``int32`` labels
        ``[2 M]`` where ``M`` is the number of sixes.
    """
    if not callable(transform):
        raise ValueError(f"transform must be a callable on images, got {transform!r}")
    if rot_interval < 0:
        raise ValueError(f"rot_interval must be >= 0 degrees, got {rot_interval}")
    sixes = np.asarray(images)[np.asarray(labels) == 6]
    if rot_interval:
        if rng is None:
            raise ValueError("rng is required when rot_interval is non-zero")
        angles = rng.uniform(-rot_interval, rot_interval, size=len(sixes))
        sixes = rotate_bilinear(sixes, angles)
    other = np.asarray(transform(sixes))
    out_images = np.ascontiguousarray(np.concatenate([sixes, other]))
    out_labels = np.repeat(np.array([0, 1], dtype=np.int32), len(sixes))
    return out_images, out_labels


@dataclasses.dataclass(frozen=True)
class Mnist6(Dataset):
    """An MNIST6 task: the sixes of plain MNIST (train and test separately) against their
    ``transform``-ed copies; no validation set (the test set serves, REFERENCE 5.4).

    Attributes:
        transform: The transformation of the copies (see :func:`derive_mnist6`).
        jitter: Whether ``rot_interval`` applies (a fixed random rotation of the originals,
            seeded by the run seed).
    """

    transform: Callable[[np.ndarray], np.ndarray]
    jitter: bool = False

    derived_from = "plain MNIST (10 classes)"
    source_classes = 10

    @property
    def takes_rot_interval(self) -> bool:
        return self.jitter

    def derive(self, arrays: Arrays, settings: LoadSettings) -> Arrays:
        out = {}
        for split in ("train", "test"):
            out[f"x_{split}"], out[f"y_{split}"] = derive_mnist6(
                arrays[f"x_{split}"],
                arrays[f"y_{split}"],
                transform=self.transform,
                rot_interval=settings.rot_interval,
                rng=np.random.default_rng([settings.seed, zlib.crc32(split.encode())]),
            )
            if len(out[f"x_{split}"]) == 0:
                raise ValueError(f"{self.name}: the source holds no digit 6 in one of its splits")
        return out

    def describe_tfds(self, root: str) -> str:
        return "TFDS 'mnist' (~11 MB), digit 6 kept and a transformed copy appended"


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        image_shape=(28, 28, 1),
        num_classes=2,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        nominal_train_size=11836,
        has_validation=False,
        tfds_name="mnist",
        val_fraction=None,
    )


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
"""Plain MNIST's statistics, used by the tasks derived from it."""

# The transformations are the groups' exact pixel actions: the rotation by pi of SE(2), the
# reflection of the mirror group (columns reversed).
register_dataset(
    "mnist6_180",
    lambda: Mnist6(_spec("mnist6_180"), ExactAction(get_group("se2"), (math.pi,)), jitter=True),
)
register_dataset(
    "mnist6_m", lambda: Mnist6(_spec("mnist6_m"), ExactAction(get_group("mirror"), (0.0, -1.0)))
)
