"""Models, config level: the public API, pinned parameter counts, bad inputs and configs."""

import jax.numpy as jnp
import pytest
from _helpers import MODEL_RNGS as RNGS
from _helpers import MODEL_TINY as TINY
from _helpers import build as _build
from flax import nnx

from pgcnn_jax import models
from pgcnn_jax.models import ModelConfig

# ----------------------------------------------------------------------------- configs
PAPER_CK = ModelConfig(
    model="ckresnet",
    width=32,
    num_blocks=2,
    block_width_factors=(1, 1, 2, 1),
    kernel_hidden=32,
    kernel_size=7,
    num_elements=8,
)
T2 = dict(group="t2", num_elements=1, partial=False, sampling="deterministic")
PAPER_GCNN = ModelConfig(
    model="gcnn",
    width=128,
    num_blocks=8,
    block_width_factors=(1, 1, 2, 7),
    pool_blocks=(2, 5),
    dropout=0.3,
    dropout_blocks=(2, 5, 8),
    kernel_hidden=8,
    kernel_size=3,
    **T2,
    sample_per_layer=False,
)
FIGURE4 = ModelConfig(
    width=10,
    num_blocks=1,
    block_width_factors=(0.0,),
    pool_blocks=(1,),
    norm="layer",
    kernel_hidden=32,
    omega_0=10.0,
    kernel_size=7,
    group="se2",
    num_elements=4,
    sampling="random",
    sample_per_layer=True,
    partial=True,
)


def _count(config, num_classes, in_features):
    model = nnx.eval_shape(
        lambda: models.build_model(
            config, num_classes=num_classes, in_features=in_features, rngs=nnx.Rngs(0)
        )
    )
    return models.count_params(model)


def test_public_api():
    assert models.__all__
    for name in models.__all__:
        assert hasattr(models, name), name


# ----------------------------------------------------------------------------- counts
# (RotMNIST: 1 channel, 10 classes), (CIFAR10: 3, 10), (CIFAR100: 3, 100)
DATASETS = [(10, 1), (10, 3), (100, 3)]


@pytest.mark.parametrize(
    "changes, counts",
    [
        (dict(group="se2", partial=True), (467_791, 469_903, 475_753)),
        (dict(group="se2", partial=False), (467_786, 469_898, 475_748)),
        (dict(group="e2", partial=True), (467_988, 470_100, 475_950)),
        (dict(**T2, sample_per_layer=False), (450_074, 452_186, 458_036)),
        (dict(**T2, sample_per_layer=True), (450_074, 452_186, 458_036)),  # grid never moves
    ],
)
def test_ckresnet_pinned_counts(changes, counts):
    config = PAPER_CK.replace(**changes)
    got = tuple(_count(config, c, i) for c, i in DATASETS)
    assert got == counts


def test_figure4_and_gcnn_pinned_counts():
    assert _count(FIGURE4, 2, 1) == 17_063
    assert _count(PAPER_GCNN, 10, 3) == 3_994_410
    assert _count(PAPER_GCNN, 100, 3) == 4_017_540
    assert _count(PAPER_GCNN, 10, 1) == 3_992_106
    partial = PAPER_GCNN.replace(group="se2", num_elements=8, partial=True, sampling="random")
    assert _count(partial.replace(sample_per_layer=True), 10, 3) == 3_994_418
    full = partial.replace(partial=False, sample_per_layer=False)
    assert _count(full, 10, 3) == 3_994_410


def test_variant_counts():
    # T(2) head: same kernel-net sizes; MLP pooling adds N h w + 1; Augerino adds theta (+mirror).
    full = PAPER_CK.replace(partial=False)
    base = _count(full, 10, 3)
    assert _count(full.replace(head="t2"), 10, 3) == base
    assert _count(full.replace(head="mlp", final_spatial_dim=(2, 2)), 10, 3) == base + 8 * 4 + 1
    t2 = _count(PAPER_CK.replace(**T2, sample_per_layer=False), 10, 3)
    assert _count(PAPER_CK.replace(model="augerino_ckresnet", partial=False), 10, 3) == t2 + 1
    aug_e2 = PAPER_CK.replace(model="augerino_ckresnet", group="e2", partial=False)
    assert _count(aug_e2, 10, 3) == t2 + 2
    aug_gcnn = PAPER_GCNN.replace(model="augerino_gcnn", group="se2", num_elements=8)
    assert _count(aug_gcnn, 10, 3) == 3_994_410 + 1


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise(key):
    net = _build(TINY)
    with pytest.raises(ValueError, match=r"\(2, 9, 9\)"):
        net(jnp.zeros((2, 9, 9)), rngs=nnx.Rngs(**RNGS))
    with pytest.raises(ValueError, match=r"\(2, 9, 9, 1\)"):
        net(jnp.zeros((2, 9, 9, 1)), rngs=nnx.Rngs(**RNGS))
    with pytest.raises(ValueError, match="3x3"):
        net(jnp.zeros((1, 4, 4, 3)), rngs=nnx.Rngs(**RNGS))
    mlp = _build(TINY.replace(partial=False, head="mlp", final_spatial_dim=(1, 1)))
    with pytest.raises(ValueError, match="final_spatial_dim"):
        mlp(jnp.zeros((1, 9, 9, 3)), rngs=nnx.Rngs(**RNGS))
    aug = _build(TINY.replace(model="augerino_ckresnet"))
    with pytest.raises(ValueError, match="rngs"):
        aug(jnp.zeros((1, 9, 9, 3)))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(block_width_factors=(1, 1, 2)), r"\(1, 1, 2\)"),
        (dict(block_width_factors=(1, 1, 2, 2)), "num_blocks"),
        (dict(block_width_factors=(1, 0.5)), "0.5"),
        (dict(pool_blocks=(3,)), r"\(3,\)"),
        (dict(model="gcnn", head="t2", partial=False), "'t2'"),
        (dict(model="gcnn", dropout_blocks=(0,)), r"\(0,\)"),
        (dict(model="augerino_ckresnet", **T2), "'t2'"),
        (dict(sampling="deterministic", sample_per_batch_element=True), "random"),
    ],
)
def test_bad_configs_raise(changes, match):
    with pytest.raises(ValueError, match=match):
        _build(TINY.replace(**changes))


def test_build_model_argument_checks():
    with pytest.raises(ValueError, match="num_classes"):
        _build(TINY, num_classes=0)
    with pytest.raises(ValueError, match="in_features"):
        _build(TINY, in_features=-1)
    with pytest.raises(ValueError, match="ModelConfig"):
        models.build_model({"model": "ckresnet"}, num_classes=2, in_features=1, rngs=nnx.Rngs(0))
