"""pgcnn_jax.data without TFDS: specs, MNIST6 derivation, npz validation, loaders, splits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import pgcnn_jax.data as pdata
from pgcnn_jax.data import (
    ArrayLoader,
    derive_mnist6,
    describe_source,
    get_spec,
    load_dataset,
    rotate_bilinear,
    train_validation_split,
)
from pgcnn_jax.models import ModelConfig
from pgcnn_jax.train import TrainConfig

# ----------------------------------------------------------------------------- helpers


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.fixture
def mnist_npz(tmp_path):
    """Fake plain MNIST: 40 train images with 7 sixes, 20 test images with 3 sixes."""
    rng = np.random.default_rng(0)
    y_train = np.array([6] * 7 + [1, 2, 3, 4, 5, 7, 8, 9, 0] * 3 + [0, 1, 2, 3, 4, 5])
    y_test = np.array([6, 6, 6] + list(range(6)) + list(range(7, 10)) + [0] * 8)
    rng.shuffle(y_train)
    return _write_npz(
        tmp_path / "mnist.npz",
        x_train=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        y_train=y_train,
        x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_test=y_test,
    )


@pytest.fixture
def cifar_npz(tmp_path):
    rng = np.random.default_rng(1)
    return _write_npz(
        tmp_path / "cifar.npz",
        x_train=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, (100,)),
        x_test=rng.integers(0, 256, (23, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, (23, 1)),  # keras layout [N, 1] is accepted
    )


def _batches(loader, epoch=0, start_step=0):
    return list(loader.epoch(epoch, start_step=start_step))


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


# ----------------------------------------------------------------------------- API and specs


def test_every_public_name_imports():
    for name in pdata.__all__:
        assert getattr(pdata, name) is not None, name


def test_specs_match_reference():
    assert pdata.DATASET_NAMES == (
        "mnist6_180",
        "mnist6_m",
        "rotmnist",
        "cifar10",
        "cifar100",
        "pcam",
        "mnist_scale",
    )
    sizes = {n: get_spec(n).nominal_train_size for n in pdata.DATASET_NAMES}
    assert sizes == {
        "mnist6_180": 11836,
        "mnist6_m": 11836,
        "rotmnist": 10000,
        "cifar10": 45000,
        "cifar100": 45000,
        "pcam": 262144,
        "mnist_scale": 10000,
    }
    assert get_spec("cifar10").mean == (0.485, 0.456, 0.406)
    assert get_spec("cifar10").std == (0.229, 0.224, 0.225)
    assert get_spec("cifar100").mean == (0.49137, 0.48235, 0.44667)
    assert get_spec("cifar100").std == (0.24706, 0.24353, 0.26157)
    assert (get_spec("rotmnist").mean, get_spec("rotmnist").std) == ((0.13,), (0.2970,))
    assert get_spec("mnist6_m").mean == (0.1307,) and get_spec("mnist6_m").std == (0.3081,)
    assert get_spec("pcam").image_shape == (96, 96, 3) and get_spec("pcam").num_classes == 2
    assert get_spec("cifar100").num_classes == 100
    assert [n for n in pdata.DATASET_NAMES if not get_spec(n).has_validation] == [
        "mnist6_180",
        "mnist6_m",
    ]
    with pytest.raises(ValueError, match="'stl10'.*cifar10"):
        get_spec("stl10")


def test_describe_source():
    assert "npz /x/y.npz" in describe_source("cifar10", data="npz:/x/y.npz")
    assert "plain MNIST" in describe_source("mnist6_m", data="npz:/m.npz")
    assert "/d/downloads/manual/" in describe_source("rotmnist", data_dir="/d")
    assert "patch_camelyon" in describe_source("pcam")
    with pytest.raises(ValueError, match="npz:PATH"):
        describe_source("cifar10", data="csv:/x")


# ----------------------------------------------------------------------------- MNIST6


def test_rotate_bilinear_exact_on_quarter_turns():
    x = np.random.default_rng(2).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(rotate_bilinear(x, 0.0), x)
    np.testing.assert_array_equal(rotate_bilinear(x, 90.0), np.rot90(x, 1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_bilinear(x, -90.0), np.rot90(x, -1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_bilinear(x[..., 0], 180.0), np.rot90(x[..., 0], 2, (1, 2)))
    # Negative control: the direction matters.
    assert not np.array_equal(rotate_bilinear(x, 90.0), np.rot90(x, -1, axes=(1, 2)))
    # Half-way between pixels the result is their (rounded) mean; outside is zero-filled.
    y = rotate_bilinear(x, 45.0)
    assert y.dtype == np.uint8 and y.shape == x.shape and (y[:, 0, 0] == 0).all()


@pytest.mark.parametrize("transform", ["rot180", "mirror"])
def test_derive_mnist6(transform):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8)
    labels = np.array([6, 1, 2, 6, 6] * 6)
    task = {"rot180": "mnist6_180", "mirror": "mnist6_m"}[transform]
    x, y = derive_mnist6(images, labels, transform=pdata.get_dataset(task).transform)
    sixes = images[labels == 6]
    assert x.shape == (36, 28, 28, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0] * 18 + [1] * 18)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(x[:18], sixes)
    rot180 = np.rot90(np.rot90(sixes, 1, axes=(1, 2)), 1, axes=(1, 2))
    mirror = sixes[:, :, ::-1]
    expected, other = (rot180, mirror) if transform == "rot180" else (mirror, rot180)
    np.testing.assert_array_equal(x[18:], expected)
    assert not np.array_equal(x[18:], other)  # negative control
    with pytest.raises(ValueError, match=f"callable.*'{transform}'"):
        derive_mnist6(images, labels, transform=transform)  # the old string spelling


def test_mnist6_from_npz(mnist_npz):
    s180 = load_dataset("mnist6_180", data=mnist_npz, batch_size=4)
    assert (s180.train.num_examples, s180.test.num_examples) == (14, 6)
    assert s180.validation is s180.test
    assert s180.train.steps_per_epoch == 3 and s180.test.steps_per_epoch == 2
    np.testing.assert_array_equal(s180.test.labels, [0, 0, 0, 1, 1, 1])
    tr = s180.train
    np.testing.assert_array_equal(tr.images[7:], np.rot90(tr.images[:7], 2, axes=(1, 2)))
    sm = load_dataset("mnist6_m", data=mnist_npz, batch_size=4)
    np.testing.assert_array_equal(sm.train.images[:7], tr.images[:7])
    np.testing.assert_array_equal(sm.train.images[7:], tr.images[:7, :, ::-1])
    batch = next(sm.test.epoch(0))
    assert batch["image"].shape == (4, 28, 28, 1) and batch["image"].dtype == np.float32


def test_mnist6_rot_interval(mnist_npz):
    base = load_dataset("mnist6_180", data=mnist_npz, batch_size=4).train.images
    a = load_dataset("mnist6_180", data=mnist_npz, batch_size=4, rot_interval=45.0, seed=0)
    b = load_dataset("mnist6_180", data=mnist_npz, batch_size=4, rot_interval=45.0, seed=0)
    c = load_dataset("mnist6_180", data=mnist_npz, batch_size=4, rot_interval=45.0, seed=1)
    np.testing.assert_array_equal(a.train.images, b.train.images)  # deterministic
    assert not np.array_equal(a.train.images[:7], base[:7])  # originals rotated
    assert not np.array_equal(a.train.images, c.train.images)  # seed dependent
    # The 180-degree copy is made after the jitter.
    np.testing.assert_array_equal(a.train.images[7:], np.rot90(a.train.images[:7], 2, (1, 2)))
    with pytest.raises(ValueError, match="mnist6_180"):
        load_dataset("mnist6_m", data=mnist_npz, batch_size=4, rot_interval=10.0)
    with pytest.raises(ValueError, match="-5"):
        load_dataset("mnist6_180", data=mnist_npz, batch_size=4, rot_interval=-5)


def test_load_splits_reads_the_run_settings(mnist_npz):
    config = TrainConfig(
        dataset="mnist6_180", model=ModelConfig(), batch_size=4, seed=2, rot_interval=30.0
    )
    a = pdata.load_splits(config, data=mnist_npz)  # another source than the config's (TFDS)
    b = load_dataset("mnist6_180", data=mnist_npz, batch_size=4, seed=2, rot_interval=30.0)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert a.train.order(0).tolist() == b.train.order(0).tolist() and a.spec == b.spec
    same = pdata.load_splits(config.replace(data=mnist_npz))
    np.testing.assert_array_equal(same.test.images, a.test.images)


# ----------------------------------------------------------------------------- npz validation


def _good_cifar():
    return {
        "x_train": np.zeros((12, 32, 32, 3), np.uint8),
        "y_train": np.zeros(12, np.int64),
        "x_test": np.zeros((4, 32, 32, 3), np.uint8),
        "y_test": np.zeros(4, np.int64),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_test": None}, r"lacks key\(s\) \['y_test'\]"),
        (
            {"x_train": np.zeros((12, 32, 32, 3, 1), np.uint8)},
            r"x_train.*rank.*\(12, 32, 32, 3, 1\)",
        ),
        ({"x_test": np.zeros((4, 32, 32, 3), np.float32)}, "x_test must be uint8.*float32"),
        ({"x_train": np.zeros((12, 28, 28), np.uint8)}, r"x_train.*\(28, 28, 1\).*\(32, 32, 3\)"),
        ({"y_train": np.zeros(11, np.int64)}, "y_train has 11 labels but x_train has 12"),
        ({"y_test": np.array([0, 1, 10, 2])}, r"y_test\[2\] = 10 is outside \[0, 10\)"),
        ({"y_test": np.array([0, -1, 0, 0])}, r"y_test\[1\] = -1"),
        ({"y_train": np.zeros(12, np.float32)}, "y_train must hold integers.*float32"),
        ({"y_train": np.zeros((12, 2), np.int64)}, r"y_train must have shape \[N\].*\(12, 2\)"),
    ],
)
def test_npz_validation(tmp_path, change, message):
    arrays = {**_good_cifar(), **change}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    data = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_dataset("cifar10", data=data, batch_size=2)
    assert "bad.npz" in str(info.value)


def test_npz_unreadable(tmp_path):
    with pytest.raises(ValueError, match="not found.*missing.npz"):
        load_dataset("cifar10", data=f"npz:{tmp_path / 'missing.npz'}", batch_size=2)
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="junk.npz.*not a readable .npz"):
        load_dataset("cifar10", data=f"npz:{tmp_path / 'junk.npz'}", batch_size=2)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single.npy.*single array"):
        load_dataset("cifar10", data=f"npz:{tmp_path / 'single.npy'}", batch_size=2)
    with pytest.raises(ValueError, match="'hdf5:x'"):
        load_dataset("cifar10", data="hdf5:x", batch_size=2)


def test_mnist6_npz_allows_ten_classes_but_checks_range(tmp_path):
    arrays = {
        "x_train": np.zeros((5, 28, 28), np.uint8),
        "y_train": np.array([6, 6, 9, 0, 1]),
        "x_test": np.zeros((2, 28, 28), np.uint8),
        "y_test": np.array([6, 12]),
    }
    with pytest.raises(ValueError, match=r"y_test\[1\] = 12 is outside \[0, 10\)"):
        load_dataset("mnist6_m", data=_write_npz(tmp_path / "m.npz", **arrays), batch_size=2)


# ----------------------------------------------------------------------------- loaders


def test_train_loader_determinism_and_drop_last(cifar_npz):
    splits = load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=3)
    train = splits.train
    assert train.num_examples == 90 and train.steps_per_epoch == 11  # floor(90 / 8)
    e0, e0_again, e1 = _batches(train, 0), _batches(train, 0), _batches(train, 1)
    assert len(e0) == 11 and all(b["image"].shape == (8, 32, 32, 3) for b in e0)
    _assert_same_batches(e0, e0_again)
    assert not np.array_equal(train.order(0), train.order(1))
    assert not np.array_equal(e0[0]["image"], e1[0]["image"])
    # Each epoch visits distinct examples; only the remainder (90 - 88) is dropped.
    assert len(set(train.order(1)[:88].tolist())) == 88
    # Another seed, another order; a fresh loader with the same seed, the same order.
    other = load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=4).train
    assert not np.array_equal(other.order(0), train.order(0))
    fresh = load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=3).train
    _assert_same_batches(_batches(fresh, 0), e0)


@pytest.mark.parametrize("augment", [False, True])
def test_start_step_equals_slicing(cifar_npz, augment):
    train = load_dataset("cifar10", data=cifar_npz, batch_size=8, augment=augment).train
    full = _batches(train, 2)
    for k in (0, 1, 5, 11):
        _assert_same_batches(_batches(train, 2, start_step=k), full[k:])
    with pytest.raises(ValueError, match="start_step.*-1"):
        _batches(train, 0, start_step=-1)


def test_eval_loaders_cover_every_example_once(cifar_npz):
    splits = load_dataset("cifar10", data=cifar_npz, batch_size=8)
    test = splits.test
    assert test.num_examples == 23 and test.steps_per_epoch == 3  # ceil(23 / 8)
    batches = _batches(test, 0)
    assert [len(b["label"]) for b in batches] == [8, 8, 7]
    _assert_same_batches(batches, _batches(test, 5))  # evaluation order ignores the epoch
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, test.labels)
    assert labels.dtype == np.int32
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_allclose(images, pdata.normalize(test.images, *_ms("cifar10")), atol=0)
    assert splits.validation.steps_per_epoch == 2  # 10 examples, batches of 8 and 2


def _ms(name):
    return get_spec(name).mean, get_spec(name).std


def test_normalisation_of_one_pixel(tmp_path):
    x = np.zeros((10, 32, 32, 3), np.uint8)
    x[0, 5, 7] = (255, 0, 128)
    data = _write_npz(
        tmp_path / "c.npz", x_train=x, y_train=np.zeros(10, int), x_test=x, y_test=np.zeros(10, int)
    )
    batch = next(load_dataset("cifar100", data=data, batch_size=5).test.epoch(0))
    pixel = batch["image"][0, 5, 7]
    expected = (
        (1.0 - 0.49137) / 0.24706,
        (0.0 - 0.48235) / 0.24353,
        (128 / 255 - 0.44667) / 0.26157,
    )
    np.testing.assert_allclose(pixel, expected, rtol=1e-6)
    assert batch["image"].dtype == np.float32


def test_validation_split(tmp_path, cifar_npz):
    # Production sizes follow from the fractions.
    assert pdata.get_dataset("rotmnist").num_validation(12000) == 2000
    assert pdata.get_dataset("cifar10").num_validation(50000) == 5000
    assert pdata.get_dataset("cifar100").num_validation(50000) == 5000
    tr, va = train_validation_split(12000, 2000)
    assert (len(tr), len(va)) == (10000, 2000)
    assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).size == 12000
    np.testing.assert_array_equal(va, np.sort(np.random.default_rng(42).permutation(12000)[10000:]))
    # RotMNIST-shaped npz at the production size: 12000 -> 10000 / 2000.
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (12000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 12000)
    data = _write_npz(tmp_path / "rot.npz", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    rot = load_dataset("rotmnist", data=data, batch_size=64)
    assert (rot.train.num_examples, rot.validation.num_examples) == (10000, 2000)
    assert rot.train.steps_per_epoch == 156 and rot.validation.steps_per_epoch == 32
    np.testing.assert_array_equal(rot.validation.labels, y[va])
    # The split does not depend on the run seed; CIFAR npz of 100 -> 90 / 10.
    a = load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=0)
    b = load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=7)
    assert (a.train.num_examples, a.validation.num_examples) == (90, 10)
    np.testing.assert_array_equal(a.validation.images, b.validation.images)
    with pytest.raises(ValueError, match="num_validation"):
        train_validation_split(10, 10)


def test_augmentation(cifar_npz):
    plain = load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=1).train
    aug = load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=1, augment=True).train
    a0, a0_again, p0 = _batches(aug, 0), _batches(aug, 0), _batches(plain, 0)
    _assert_same_batches(a0, a0_again)
    np.testing.assert_array_equal(a0[0]["label"], p0[0]["label"])  # same order as without
    assert not np.array_equal(a0[0]["image"], p0[0]["image"])
    # Every augmented image is a (flipped) 32x32 crop of the zero-padded original.
    mean, std = _ms("cifar10")
    originals = aug.images[aug.order(0)[:8]]
    padded = np.pad(originals, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(8):
        candidates = [
            pdata.normalize(img, mean, std)
            for oy, ox, flip in itertools.product(range(9), range(9), (False, True))
            for img in [padded[i, oy : oy + 32, ox : ox + 32][:, :: -1 if flip else 1]]
        ]
        assert any(np.array_equal(a0[0]["image"][i], c) for c in candidates)
    with pytest.raises(ValueError, match="augment.*'rotmnist'"):
        load_dataset("rotmnist", data=cifar_npz, batch_size=8, augment=True)


def test_argument_errors(cifar_npz):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            load_dataset("cifar10", data=cifar_npz, batch_size=bad)
    with pytest.raises(ValueError, match="batch_size 91 exceeds the 90 training examples"):
        load_dataset("cifar10", data=cifar_npz, batch_size=91)
    with pytest.raises(ValueError, match="seed"):
        load_dataset("cifar10", data=cifar_npz, batch_size=8, seed=-1)
    with pytest.raises(ValueError, match="epoch_index"):
        _batches(load_dataset("cifar10", data=cifar_npz, batch_size=8).train, -1)
    with pytest.raises(ValueError, match="uint8"):
        ArrayLoader(
            np.zeros((4, 2, 2, 1)), np.zeros(4), mean=(0,), std=(1,), batch_size=2, train=True
        )
