"""Loading and validating a local ``.npz`` dataset (``data="npz:PATH"``)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

__all__ = ["NPZ_KEYS", "load_npz"]

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(
    path: str | os.PathLike,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
) -> dict[str, np.ndarray]:
    """Reads and validates ``x_train, y_train, x_test, y_test`` from an ``.npz`` file.

    Images must be ``uint8`` ``[N, H, W]`` (a channel axis is appended) or ``[N, H, W, C]``
    with ``(H, W, C) == image_shape``; labels integer ``[N]`` (``[N, 1]`` is accepted and
    flattened) with values in ``[0, num_classes)``.

    Returns:
        ``{"x_train": uint8 [N, H, W, C], "y_train": int32 [N], "x_test": ..., "y_test": ...}``.

    Raises:
        ValueError: Naming the path, key, shape or value for a missing or unreadable file,
            missing keys, a wrong image rank, dtype or shape, a label count mismatch or labels
            out of range.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"npz file not found: {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        # ValueError: pickled or non-npy content; BadZipFile: broken zip; OSError/EOFError:
        # truncated file.
        raise ValueError(f"{path!r} is not a readable .npz archive: {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} holds a single array, not a .npz archive")
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path!r} lacks key(s) {missing}; required keys: {', '.join(NPZ_KEYS)}"
            )
        try:
            raw = {k: archive[k] for k in NPZ_KEYS}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path!r}: cannot read an array: {err}") from None

    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        x, y = raw[xk], raw[yk]
        if x.ndim not in (3, 4):
            raise ValueError(
                f"{path!r}: {xk} must have rank 3 [N, H, W] or 4 [N, H, W, C], got shape {x.shape}"
            )
        if x.dtype != np.uint8:
            raise ValueError(f"{path!r}: {xk} must be uint8, got dtype {x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if tuple(x.shape[1:]) != tuple(image_shape):
            raise ValueError(
                f"{path!r}: {xk} has image shape {tuple(x.shape[1:])} (array shape "
                f"{x.shape}), expected {tuple(image_shape)}"
            )
        if len(x) == 0:
            raise ValueError(f"{path!r}: {xk} holds no examples (shape {x.shape})")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{path!r}: {yk} must have shape [N], got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path!r}: {yk} must hold integers, got dtype {y.dtype}")
        if len(y) != len(x):
            raise ValueError(f"{path!r}: {yk} has {len(y)} labels but {xk} has {len(x)} images")
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{path!r}: {yk}[{i}] = {int(y[i])} is outside [0, {num_classes})")
        out[xk] = np.ascontiguousarray(x)
        out[yk] = y.astype(np.int32)
    return out
