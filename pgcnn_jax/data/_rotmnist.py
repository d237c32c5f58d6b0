"""TFDS builder for RotMNIST (``mnist_rotation_new``, Larochelle et al. 2007).

``mnist_rotation_new.zip`` holds ``mnist_all_rotation_normalized_float_train_valid.amat``
(12 000 rows) and ``mnist_all_rotation_normalized_float_test.amat`` (50 000 rows); each row is
784 floats in ``[0, 1]`` followed by the label. Rows are reshaped row-major to 28x28 without a
transpose, as in the original code. Pixels become ``uint8`` as ``round(256 * x)`` like the
original, **but clipped to 255**: the original casts 256 straight to ``uint8`` so a pixel of
exactly 1.0 would wrap to 0 (REFERENCE 6); this deliberate difference affects only such pixels.

Offline use: place ``mnist_rotation_new.zip`` (or the two extracted ``.amat`` files) in
``<data_dir>/downloads/manual/`` (or pass ``DownloadConfig(manual_dir=...)``); otherwise the
zip is downloaded from :data:`URL`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from pgcnn_jax.data._rotmnist_dataset import TEST_FILE, TRAIN_FILE, URL, ZIP_NAME

__all__ = ["TEST_FILE", "TRAIN_FILE", "URL", "ZIP_NAME", "RotatedMnist", "parse_amat"]


def parse_amat(path: str | epath.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parses one ``.amat`` file into ``uint8 [N, 28, 28, 1]`` images and ``int64 [N]`` labels.

    Raises:
        ValueError: If the rows do not hold 785 numbers.
    """
    with epath.Path(path).open("r") as f:
        data = np.loadtxt(f, dtype=np.float64, ndmin=2)
    if data.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 785 numbers, got shape {data.shape}")
    images = np.clip(np.rint(data[:, :-1] * 256.0), 0, 255).astype(np.uint8)
    labels = np.rint(data[:, -1]).astype(np.int64)
    return images.reshape(-1, 28, 28, 1), labels


def _find(root: epath.Path, name: str) -> epath.Path | None:
    direct = root / name
    if direct.exists():
        return direct
    return next(iter(root.glob(f"*/{name}")), None)  # one folder deep, as some zips nest


class RotatedMnist(tfds.core.GeneratorBasedBuilder):
    """RotMNIST: 12 000 ``train`` (train + valid) and 50 000 ``test`` rotated MNIST digits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (pixels = clip(round(256 x), 0, 255))."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Optional: place {ZIP_NAME} (from {URL}) or its two extracted .amat files in the "
        "manual directory (default <data_dir>/downloads/manual/) to prepare offline."
    )

    DOWNLOAD_URLS = (URL,)  # what a download fetches (no TFDS checksums registry here)

    def has_local_source(self) -> bool:
        """Whether ``<data_dir>/downloads/manual/`` holds the zip or both ``.amat`` files."""
        manual = epath.Path(self.data_dir_root) / "downloads" / "manual"
        if not manual.is_dir():
            return False
        return (manual / ZIP_NAME).exists() or bool(
            _find(manual, TRAIN_FILE) and _find(manual, TEST_FILE)
        )

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's default probes ``importlib_resources`` (absent on Python >= 3.9 unless
        # installed) for packages installed in editable mode; this file is the answer anyway.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="MNIST digits rotated by random angles (Larochelle et al., 2007).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # keep the .amat row order (the validation split uses it)
            homepage="https://web.archive.org/web/2018/http://www.iro.umontreal.ca/~lisa/twiki/bin/view.cgi/Public/MnistVariations",
        )

    def _source_dir(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
        try:
            manual = epath.Path(dl_manager.manual_dir)
        except AssertionError:  # no manual directory, or an empty one
            manual = None
        if manual is not None:
            if _find(manual, TRAIN_FILE) and _find(manual, TEST_FILE):
                return manual
            if (manual / ZIP_NAME).exists():
                return epath.Path(dl_manager.extract(manual / ZIP_NAME))
        return epath.Path(dl_manager.download_and_extract(URL))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = self._source_dir(dl_manager)
        files = {}
        for split, name in (("train", TRAIN_FILE), ("test", TEST_FILE)):
            found = _find(root, name)
            if found is None:
                raise FileNotFoundError(f"{name} not found under {root}")
            files[split] = found
        return {split: self._generate_examples(path) for split, path in files.items()}

    def _generate_examples(self, path: epath.Path) -> Iterator[tuple[int, dict[str, Any]]]:
        images, labels = parse_amat(path)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image, "label": int(label)}
