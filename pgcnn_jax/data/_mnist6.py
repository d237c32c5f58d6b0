"""MNIST6-180 and MNIST6-M, derived from plain MNIST (REFERENCE 6)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from pgcnn_jax.groups import get_group

__all__ = ["derive_mnist6", "rotate_bilinear"]


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


_TRANSFORMS = {"rot180": ("se2", (math.pi,)), "mirror": ("mirror", (0.0, -1.0))}


def derive_mnist6(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    transform: Literal["rot180", "mirror"],
    rot_interval: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Builds MNIST6-180 / MNIST6-M from MNIST images and digit labels.

    Keeps the digit 6 only and appends a transformed copy: rotated by exactly 180 degrees
    (``transform="rot180"``) or flipped along the column axis (``transform="mirror"``),
    both by the groups' exact pixel action. Label 0 = original, 1 = transformed; originals
    come first.

    Args:
        images: ``uint8`` ``[N, H, W, C]`` (or ``[N, H, W]``) MNIST images.
        labels: Integer digit labels ``[N]``.
        transform: ``"rot180"`` (MNIST6-180) or ``"mirror"`` (MNIST6-M).
        rot_interval: Degrees; if non-zero every original 6 is first rotated (bilinear) by an
            angle drawn uniformly from ``[-rot_interval, rot_interval]``, once.
        rng: Generator for those angles; required when ``rot_interval`` is non-zero.

    Returns:
        ``(images, labels)``: ``uint8`` images ``[2 M, H, W, C]`` and ``int32`` labels
        ``[2 M]`` where ``M`` is the number of sixes.
    """
    if transform not in ("rot180", "mirror"):
        raise ValueError(f"transform must be 'rot180' or 'mirror', got {transform!r}")
    if rot_interval < 0:
        raise ValueError(f"rot_interval must be >= 0 degrees, got {rot_interval}")
    sixes = np.asarray(images)[np.asarray(labels) == 6]
    if rot_interval:
        if rng is None:
            raise ValueError("rng is required when rot_interval is non-zero")
        angles = rng.uniform(-rot_interval, rot_interval, size=len(sixes))
        sixes = rotate_bilinear(sixes, angles)
    # The groups' exact pixel action: the rotation by pi of SE(2), the reflection of the mirror
    # group (columns reversed).
    group, element = _TRANSFORMS[transform]
    other = np.asarray(get_group(group).act(sixes, element, exact=True))
    out_images = np.ascontiguousarray(np.concatenate([sixes, other]))
    out_labels = np.repeat(np.array([0, 1], dtype=np.int32), len(sixes))
    return out_images, out_labels
