"""MNIST-scale: the rescaling, the derivation from plain MNIST, the spec, the presets and the
``experiments.mnist_scale`` CLI end to end on a tiny npz."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from experiments import _cli, configs, mnist_scale
from pgcnn_jax.data import (
    DATASET_NAMES,
    MNIST_SCALE_SIZES,
    derive_mnist_scale,
    describe_source,
    get_spec,
    load_dataset,
    mnist_scale_sizes,
    rescale_area,
)
from pgcnn_jax.groups import GROUP_NAMES

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 20  # side of the synthetic square "digit"


def _square(n=1, side=SIDE, size=28):
    """``uint8 [n, size, size]`` images holding a centred white square of ``side`` pixels."""
    x = np.zeros((n, size, size), np.uint8)
    a = (size - side) // 2
    x[:, a : a + side, a : a + side] = 255
    return x


def _bbox(image):
    """``(rows, cols)`` extent and centre of the non-zero pixels of a 2-D image."""
    r, c = np.nonzero(image.any(1))[0], np.nonzero(image.any(0))[0]
    return r.max() - r.min() + 1, c.max() - c.min() + 1, (r.min() + r.max()) / 2


def _mnist_npz(path, n_train, n_test, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, n_train),
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test),
    )
    return f"npz:{path}"


# ----------------------------------------------------------------------------- rescaling


def test_rescale_area_shrinks_about_the_centre():
    x = _square()
    np.testing.assert_array_equal(rescale_area(x, 1.0), x)  # s = 1 is the identity
    for s in (0.3, 0.5, 0.75, 0.9):
        y = rescale_area(x, s)[0]
        rows, cols, centre = _bbox(y)
        # The square's side becomes s * 20, up to one partly covered pixel on each side (a
        # sliver under 1/510 of a pixel rounds to 0).
        assert s * SIDE - 1 < rows <= s * SIDE + 2 and rows == cols, (s, rows)
        assert centre == pytest.approx(13.5, abs=0.5)
        # Area resampling keeps the ink times s^2; the interior stays white.
        assert y.sum() / x.sum() == pytest.approx(s * s, rel=0.01)
        assert y[13, 13] == 255
    # Channels and per-image factors.
    xc = np.repeat(_square(2)[..., None], 3, axis=-1)
    yc = rescale_area(xc, np.array([0.5, 1.0]))
    assert yc.shape == xc.shape and yc.dtype == np.uint8
    np.testing.assert_array_equal(yc[1], xc[1])
    np.testing.assert_array_equal(yc[0, ..., 2], rescale_area(x, 0.5)[0])
    assert not np.array_equal(rescale_area(x, 0.5), rescale_area(x, 0.6))  # negative control


@pytest.mark.parametrize(
    "images, factors, message",
    [
        (np.zeros((2, 28, 28), np.uint8), [0.5, 0.0], r"factors\[1\] = 0.0"),
        (np.zeros((1, 28, 28), np.uint8), np.nan, "finite and > 0"),
        (np.zeros((1, 28, 28), np.float32), 0.5, "uint8"),
        (np.zeros((28, 28), np.uint8), 0.5, r"shape \(28, 28\)"),
    ],
)
def test_rescale_area_errors(images, factors, message):
    with pytest.raises(ValueError, match=message):
        rescale_area(images, factors)


# ----------------------------------------------------------------------------- derivation


def test_split_sizes():
    assert mnist_scale_sizes(70_000) == MNIST_SCALE_SIZES == (10_000, 2_000, 50_000)
    assert mnist_scale_sizes(62_000) == MNIST_SCALE_SIZES
    assert mnist_scale_sizes(5_000) == (806, 161, 4_033)  # data/mnist5k.npz
    assert mnist_scale_sizes(62) == (10, 2, 50)
    for n in (31, 100, 4_321, 61_999):
        assert sum(mnist_scale_sizes(n)) == n  # a smaller source is used whole
    with pytest.raises(ValueError, match="at least 31 .* got 30"):
        mnist_scale_sizes(30)


def test_derive_mnist_scale():
    n = 124
    rng = np.random.default_rng(0)
    images = _square(n)[..., None]
    labels = rng.integers(0, 10, n)
    parts = derive_mnist_scale(images, labels, rng=np.random.default_rng(5))
    assert list(parts) == ["train", "validation", "test"]
    assert [len(p.labels) for p in parts.values()] == [20, 4, 100]
    seen = np.concatenate([p.source_index for p in parts.values()])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # disjoint, all used
    for part in parts.values():
        assert part.images.shape == (len(part.labels), 28, 28, 1)
        assert part.images.dtype == np.uint8 and part.labels.dtype == np.int32
        np.testing.assert_array_equal(part.labels, labels[part.source_index])  # labels kept
        assert ((part.factors >= 0.3) & (part.factors < 1.0)).all()
        for image, s in zip(part.images[..., 0], part.factors, strict=True):
            rows, cols, _ = _bbox(image)  # the digit's box shrinks by its own factor
            assert s * SIDE - 1 < rows <= s * SIDE + 2 and rows == cols
    factors = np.concatenate([p.factors for p in parts.values()])
    assert factors.min() < 0.45 and factors.max() > 0.85 and len(np.unique(factors)) == n

    # Reproducible with the seed, different with another.
    again = derive_mnist_scale(images[..., 0], labels, rng=np.random.default_rng(5))
    other = derive_mnist_scale(images, labels, rng=np.random.default_rng(6))
    for name, part in parts.items():
        for a, b in zip(part, again[name], strict=True):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(part.source_index, other[name].source_index)


def test_derive_mnist_scale_errors():
    x, y = _square(40), np.zeros(40, int)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"labels must have shape \(40,\)"):
        derive_mnist_scale(x, y[:39], rng=rng)
    with pytest.raises(ValueError, match="0 < low <= high"):
        derive_mnist_scale(x, y, rng=rng, scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="numpy Generator"):
        derive_mnist_scale(x, y, rng=0)
    with pytest.raises(ValueError, match="got 30"):
        derive_mnist_scale(x[:30], y[:30], rng=rng)


# ----------------------------------------------------------------------------- spec, loading


def test_spec():
    spec = get_spec("mnist_scale")
    assert "mnist_scale" in DATASET_NAMES
    assert (spec.image_shape, spec.num_classes) == ((28, 28, 1), 10)
    assert (spec.mean, spec.std) == ((0.1307,), (0.3081,))
    assert (spec.nominal_train_size, spec.has_validation, spec.tfds_name) == (10_000, True, "mnist")
    assert "10000 / 2000 / 50000" in describe_source("mnist_scale")


def test_load_from_plain_mnist_npz(tmp_path):
    data = _mnist_npz(tmp_path / "mnist.npz", n_train=50, n_test=12)
    assert "(62 digits): 10 / 2 / 50 train / validation / test" in describe_source(
        "mnist_scale", data=data
    )
    splits = load_dataset("mnist_scale", data=data, batch_size=2, seed=3)
    loaders = (splits.train, splits.validation, splits.test)
    assert [loader.num_examples for loader in loaders] == [10, 2, 50]
    with np.load(tmp_path / "mnist.npz") as f:
        pooled = np.concatenate([f["y_train"], f["y_test"]])
    got = np.concatenate([loader.labels for loader in loaders])
    np.testing.assert_array_equal(np.sort(got), np.sort(pooled))  # train and test pooled
    batch = next(splits.test.epoch(0))
    expected = (splits.test.images[:2].astype(np.float32) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(batch["image"], expected, rtol=1e-6)
    # The realisation follows the seed.
    same = load_dataset("mnist_scale", data=data, batch_size=2, seed=3)
    other = load_dataset("mnist_scale", data=data, batch_size=2, seed=4)
    np.testing.assert_array_equal(same.test.images, splits.test.images)
    assert not np.array_equal(other.test.images, splits.test.images)
    with pytest.raises(ValueError, match="rot_interval"):
        load_dataset("mnist_scale", data=data, batch_size=2, rot_interval=10.0)


# ----------------------------------------------------------------------------- presets


def test_presets():
    assert configs.CLI_OF_DATASET["mnist_scale"] == "mnist_scale"
    for variant, group in (("t2", "t2"), ("se2-full", "se2"), ("se2-partial", "se2")):
        preset = configs.PRESETS[f"mnist_scale-{variant}"]
        base = configs.PRESETS[f"rotmnist-{variant}"].config
        assert preset.config == base.replace(dataset="mnist_scale")
        assert preset.config.model.group == group
        assert "1.68 %" in preset.doc and "2.0 %" in preset.doc
        assert f"rotmnist-{variant}" in preset.doc
        assert preset.command.startswith("python -m experiments.mnist_scale --preset=")
    assert configs.PRESETS["mnist_scale-se2-partial"].config.model.partial
    assert not configs.PRESETS["mnist_scale-se2-full"].config.model.partial
    for variant in ("sim2-full", "sim2-partial"):
        name = f"mnist_scale-{variant}"
        if "sim2" in GROUP_NAMES:  # wired once the group exists
            config = configs.get_preset(name)
            assert (config.model.group, config.model.num_elements) == ("sim2", 16)
            assert config.model.partial == variant.endswith("partial")
        else:  # known by name, refused with the reason; never replaced by another group
            assert name not in configs.PRESETS and name in configs.UNAVAILABLE_PRESETS
            with pytest.raises(ValueError, match=f"{name}.*group 'sim2'.*not registered"):
                configs.get_preset(name)


@pytest.mark.skipif("sim2" not in GROUP_NAMES, reason="the group sim2 is not registered")
@pytest.mark.parametrize("variant", ["sim2-full", "sim2-partial"])
def test_sim2_presets_fit_28x28(variant):
    """The sim2 presets' enlarged kernels (the sqrt 2 scale) still fit the final valid conv
    on the 7x7 map a 28x28 digit leaves after two poolings (the geometry of the preset; only
    the width and the element count are shrunk here)."""
    import jax.numpy as jnp
    from flax import nnx

    from pgcnn_jax.models import build_model

    config = configs.get_preset(f"mnist_scale-{variant}", width=4, num_elements=4)
    model = build_model(config.model, num_classes=10, in_features=1, rngs=nnx.Rngs(0))
    logits = model(jnp.zeros((2, 28, 28, 1)), rngs=nnx.Rngs(1))
    assert logits.shape == (2, 10) and bool(jnp.isfinite(logits).all())


def _run_in_process(*args):
    FLAGS.unparse_flags()
    try:
        mnist_scale.main(FLAGS(["mnist_scale", *args]))
        return 0
    except SystemExit as exit_:
        return exit_.code
    finally:
        FLAGS.unparse_flags()


def test_cli_resolution_and_sim2_guard(capsys, tmp_path):
    FLAGS.unparse_flags()
    try:
        FLAGS(["prog", "--group=t2"])
        assert _cli.resolve(("mnist_scale",), None)[0] == "mnist_scale-t2"
        FLAGS.unparse_flags()
        FLAGS(["prog"])
        name, config = _cli.resolve(("mnist_scale",), None)
        assert (name, config.dataset) == ("mnist_scale-se2-partial", "mnist_scale")
    finally:
        FLAGS.unparse_flags()
    if "sim2" not in GROUP_NAMES:
        workdir = tmp_path / "never"
        code = _run_in_process("--preset=mnist_scale-sim2-partial", f"--workdir={workdir}")
        err = capsys.readouterr().err
        assert code == 1 and "group 'sim2', which is not registered" in err
        assert not workdir.exists()


# ----------------------------------------------------------------------------- end to end

TINY = (
    "--width=4",
    "--kernel_hidden=8",
    "--kernel_size=3",
    "--set=num_blocks=1",
    "--set=block_width_factors=[1,1]",
    "--set=pool_blocks=[1]",
    "--batch_size=2",
    "--epochs=1",
    "--max_steps=1",
    "--noprogress",
)


@pytest.mark.parametrize(
    "preset, extra, group, num_partial",
    [("mnist_scale-t2", [], "t2", 0), ("mnist_scale-sim2-partial", ["--elems=4"], "sim2", 3)],
)
def test_cli_end_to_end(preset, extra, group, num_partial, tmp_path, capsys):
    """One step of a tiny model, ``main`` run in this process as ``python -m`` would, on a
    62-digit plain-MNIST npz."""
    data = _mnist_npz(tmp_path / "mnist.npz", n_train=50, n_test=12)
    args = [f"--preset={preset}", *TINY, *extra, f"--data={data}", f"--workdir={tmp_path / 'run'}"]
    code = _run_in_process(*args)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "10 / 2 / 50 train / validation / test" in err.splitlines()[0]
    summary = json.loads(out.strip().splitlines()[-1])
    with open(tmp_path / "run" / "results.json") as f:
        results = json.load(f)
    assert summary["test_accuracy"] == results["test_accuracy"]
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["steps"] == 1
    assert results["config"]["dataset"] == "mnist_scale"
    assert results["config"]["model"]["group"] == group
    assert len(results["theta"]) == len(results["axes"]) == num_partial
    if group == "sim2":  # both axes logged: 2 rotations x 2 scales, all kept at the start
        assert [a["scale"]["of"] * a["rotation"]["of"] for a in results["axes"]] == [4] * 3


def test_cli_help_lists_the_shared_flags():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "experiments.mnist_scale", "--help"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1) and "Traceback" not in out, out  # absl: 1
    for flag in ("--group", "--elems", "--data:", "--max_steps", "--preset", "--workdir"):
        assert f"  {flag}" in out, flag
    assert "MNIST-scale" in out
