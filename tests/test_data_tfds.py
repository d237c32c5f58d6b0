"""pgcnn_jax.data through TFDS, offline: mocked MNIST/CIFAR/PCam and RotMNIST on a fake zip."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from pgcnn_jax.data import (  # noqa: E402
    RotatedMnist,
    StreamingLoader,
    load_dataset,
    train_validation_split,
)
from pgcnn_jax.data._rotmnist import TEST_FILE, TRAIN_FILE, ZIP_NAME  # noqa: E402


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


# ----------------------------------------------------------------------------- mocked TFDS


def test_mnist6_from_mocked_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=200):
        raw = tfds.as_numpy(tfds.builder("mnist", data_dir=tmp_path).as_dataset(split="train"))
        raw = list(raw)
        splits = load_dataset("mnist6_180", data_dir=str(tmp_path), batch_size=4)
    sixes = np.stack([ex["image"] for ex in raw if ex["label"] == 6])
    m = len(sixes)
    assert m > 4
    assert splits.train.num_examples == 2 * m and splits.validation is splits.test
    np.testing.assert_array_equal(splits.train.images[:m], sixes)
    np.testing.assert_array_equal(splits.train.images[m:], np.rot90(sixes, 2, axes=(1, 2)))
    np.testing.assert_array_equal(splits.train.labels, [0] * m + [1] * m)


def test_cifar10_from_mocked_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=60):
        splits = load_dataset("cifar10", data_dir=str(tmp_path), batch_size=8)
    assert (splits.train.num_examples, splits.validation.num_examples) == (54, 6)
    assert splits.test.num_examples == 60 and splits.train.steps_per_epoch == 6
    batch = next(splits.train.epoch(0))
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and (batch["label"] < 10).all()


def test_pcam_streams_from_mocked_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=21):
        splits = load_dataset("pcam", data_dir=str(tmp_path), batch_size=4, seed=1)
        train, test = splits.train, splits.test
        assert isinstance(train, StreamingLoader) and isinstance(splits.validation, StreamingLoader)
        assert (train.num_examples, train.steps_per_epoch) == (21, 5)
        assert (test.num_examples, test.steps_per_epoch) == (21, 6)
        e0, e0_again, e1 = (list(train.epoch(e)) for e in (0, 0, 1))
        assert len(e0) == 5 and all(b["image"].shape == (4, 96, 96, 3) for b in e0)
        _same(e0, e0_again)
        assert not all(np.array_equal(a["label"], b["label"]) for a, b in zip(e0, e1))
        _same(list(train.epoch(0, start_step=3)), e0[3:])
        ordered = list(test.epoch(0))
        assert [len(b["label"]) for b in ordered] == [4, 4, 4, 4, 4, 1]
        _same(list(test.epoch(0, start_step=2)), ordered[2:])
        raw = list(
            tfds.as_numpy(
                tfds.builder("patch_camelyon", data_dir=tmp_path).as_dataset(split="test")
            )
        )
    images = np.concatenate([b["image"] for b in ordered])
    expected = (
        np.stack([ex["image"] for ex in raw]) / np.float32(255) - np.float32(0.701)
    ) / np.float32(0.235)
    np.testing.assert_allclose(images[..., 0], expected[..., 0], rtol=1e-6)


# ----------------------------------------------------------------------------- RotMNIST builder


def _amat_rows(rng, n):
    pixels = rng.random((n, 784)).round(3)
    pixels[:, 0] = 1.0  # would wrap to 0 in the original; clipped to 255 here
    pixels[:, 1] = 0.5  # -> 128
    labels = np.arange(n) % 10
    return pixels, labels


def _write_zip(path, rng, n_train, n_test):
    content = {}
    with zipfile.ZipFile(path, "w") as zf:
        for name, n in ((TRAIN_FILE, n_train), (TEST_FILE, n_test)):
            pixels, labels = _amat_rows(rng, n)
            lines = [
                " ".join(f"{v:.6g}" for v in row) + f" {lab:.1f}"
                for row, lab in zip(pixels, labels)
            ]
            zf.writestr(name, "\n".join(lines) + "\n")
            content[name] = (pixels, labels)
    return content


def _expected_images(pixels):
    return np.clip(np.rint(pixels * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)


def test_rotmnist_builder_from_manual_zip(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    content = _write_zip(manual / ZIP_NAME, np.random.default_rng(0), n_train=6, n_test=3)
    builder = RotatedMnist(data_dir=str(tmp_path / "tfds"))
    assert builder.name == "rotated_mnist" and str(builder.version) == "1.0.0"
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    for split, name in (("train", TRAIN_FILE), ("test", TEST_FILE)):
        exs = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
        pixels, labels = content[name]
        images = np.stack([ex["image"] for ex in exs])
        np.testing.assert_array_equal(images, _expected_images(pixels))  # row-major, no transpose
        np.testing.assert_array_equal([ex["label"] for ex in exs], labels)
        assert (images[:, 0, 0, 0] == 255).all() and (images[:, 0, 1, 0] == 128).all()


def test_rotmnist_load_dataset_offline(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    content = _write_zip(manual / ZIP_NAME, np.random.default_rng(1), n_train=12, n_test=5)
    splits = load_dataset("rotmnist", data_dir=str(tmp_path), batch_size=4)
    assert (splits.train.num_examples, splits.validation.num_examples) == (10, 2)  # 1/6 held out
    assert splits.test.num_examples == 5
    pixels, labels = content[TEST_FILE]
    np.testing.assert_array_equal(splits.test.images, _expected_images(pixels))
    np.testing.assert_array_equal(splits.test.labels, labels)
    # TFDS keeps the .amat row order, so the seed-42 split picks the same rows as on the file.
    tr, va = train_validation_split(12, 2)
    expected = _expected_images(content[TRAIN_FILE][0])
    np.testing.assert_array_equal(splits.train.images, expected[tr])
    np.testing.assert_array_equal(splits.validation.images, expected[va])
    np.testing.assert_array_equal(splits.validation.labels, content[TRAIN_FILE][1][va])
