"""pgcnn_jax.analysis: rotations, the rotation response of Figure 4, learned subsets and
equivariance profiles on tiny untrained models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import TINY
from flax import nnx

from pgcnn_jax.analysis import (
    conv_layers,
    equivariance_profile,
    learned_subsets,
    record_features,
    rotate_images,
    rotated_copies,
    rotation_response,
)
from pgcnn_jax.kernels import KernelSpec
from pgcnn_jax.models import build_model
from pgcnn_jax.nn import GroupConv, LiftingConv

ANGLES = tuple(range(-180, 181))


def tiny_model(**kw):
    config = TINY.replace(norm="layer", **kw)
    return build_model(config, num_classes=2, in_features=1, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def partial_model():
    return tiny_model()  # SE2, random sampling, learned theta


@pytest.fixture(scope="module")
def full_model():
    return tiny_model(partial=False, sampling="deterministic", sample_per_layer=False)


@pytest.fixture(scope="module")
def image():
    return jnp.asarray(np.random.default_rng(0).normal(size=(28, 28, 1)), jnp.float32)


@nnx.jit(static_argnums=2)
def _forward(model, x, seed):
    return jax.nn.softmax(model(x, rngs=nnx.Rngs(sample=seed, dropout=seed)), axis=-1)


def forward_probs(model, x, seed=0):
    """The plain forward (eval mode, sampling key ``seed``) as probabilities."""
    model.eval()
    return np.asarray(_forward(model, x, seed))


# ----------------------------------------------------------------------------- rotate_images


def test_rotate_images_quarter_turns_are_exact(image):
    x = image[None]
    np.testing.assert_array_equal(rotate_images(x, 90.0), jnp.rot90(x, k=-1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_images(x, -90.0), jnp.rot90(x, k=1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_images(x, 360.0), x)


def test_rotate_images_bilinear_is_continuous(image):
    x = image[None]
    near = rotate_images(x, 89.999)
    np.testing.assert_allclose(near, rotate_images(x, 90.0), atol=1e-2)


def test_rotated_copies_match_rotate_images(image):
    angles = [0.0, 90.0, -90.0, 180.0, 270.0, 30.0, -137.5]
    many = rotated_copies(image, angles)
    assert many.shape == (len(angles), 28, 28, 1)
    for a, got in zip(angles, many, strict=True):
        want = rotate_images(image[None], a)[0]
        if a % 90 == 0:
            np.testing.assert_array_equal(got, want)  # exact quarter turns
        else:
            np.testing.assert_allclose(got, want, atol=1e-4)
    # fill: pixels coming from outside the image take that value.
    filled = rotated_copies(jnp.zeros((9, 9, 2)), [45.0], fill=[1.0, -2.0])
    np.testing.assert_allclose(filled[0, 0, 0], [1.0, -2.0], atol=1e-6)  # from outside
    np.testing.assert_allclose(filled[0, 4, 4], [0.0, 0.0], atol=1e-6)  # the centre


# ----------------------------------------------------------------------------- rotation_response


def test_rotation_response_shape_probabilities_and_identity(partial_model, image):
    probs = rotation_response(partial_model, image, ANGLES)
    assert probs.shape == (361, 2) and probs.dtype == np.float32
    assert np.all(probs >= 0) and np.all(probs <= 1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Angle 0 is the unrotated image with the same sampling key.
    want = forward_probs(partial_model, image[None])[0]
    np.testing.assert_allclose(probs[ANGLES.index(0)], want, atol=1e-5)
    # The sampled elements (random for this model) follow the seed ...
    other = rotation_response(partial_model, image, ANGLES, seed=3)
    np.testing.assert_allclose(
        other[ANGLES.index(0)], forward_probs(partial_model, image[None], 3)[0], atol=1e-5
    )
    # ... and do not depend on how the rotated copies are batched.
    some = rotation_response(partial_model, image, ANGLES[100:107], batch=3)
    np.testing.assert_allclose(some, probs[100:107], atol=1e-5)


def test_rotation_response_of_a_full_gcnn_is_invariant_to_quarter_turns(full_model, image):
    probs = rotation_response(full_model, image, [0, 90, 180, 270, -90, 45])
    for row in probs[1:5]:
        np.testing.assert_allclose(row, probs[0], atol=1e-5)
    rotated = jnp.rot90(image, k=-1, axes=(0, 1))  # the +90 group rotation
    np.testing.assert_allclose(probs[1], forward_probs(full_model, rotated[None])[0], atol=1e-5)


def test_rotation_response_fill(full_model):
    # A constant image equal to the fill value stays constant under every rotation.
    flat = jnp.full((28, 28, 1), -0.42, jnp.float32)
    probs = rotation_response(full_model, flat, [0.0, 17.0, 45.0], fill=-0.42)
    np.testing.assert_allclose(probs, np.broadcast_to(probs[:1], probs.shape), atol=1e-5)
    zero_fill = rotation_response(full_model, flat, [17.0])
    assert not np.allclose(zero_fill[0], probs[1], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image=np.zeros((1, 28, 28, 1))), "image must be"),
        (dict(batch=0), "batch must be"),
        (dict(angles_deg=[]), "angles_deg is empty"),
        (dict(fill=[0.0, 1.0]), "fill must be"),
    ],
)
def test_rotation_response_rejects_bad_input(full_model, kwargs, message):
    args = dict(image=np.zeros((28, 28, 1)), angles_deg=[0.0]) | kwargs
    with pytest.raises(ValueError, match=message):
        rotation_response(full_model, **args)


# ----------------------------------------------------------------------------- subsets, profile


def test_learned_subsets_cover_every_conv_in_forward_order(partial_model, full_model):
    x = jnp.zeros((1, 28, 28, 1))
    for model, partial in ((partial_model, True), (full_model, False)):
        subsets = learned_subsets(model, x)
        names = [s.name for s in subsets]
        assert sorted(names) == sorted(n for n, _ in conv_layers(model))
        assert names[0] == "lift" and not subsets[0].partial
        modules = dict(conv_layers(model))
        for s in subsets:
            layer = modules[s.name]
            want = 1.0 if getattr(layer, "theta", None) is None else float(layer.theta[...])
            rotation = s.axes["rotation"]
            assert rotation["width"] == pytest.approx(want)
            assert rotation["interval_deg"] == pytest.approx([-180 * abs(want), 180 * abs(want)])
            assert "mirror" not in s.axes and s.num_elements == 4
            assert 1 <= rotation["kept"] == s.kept_elements <= 4
        assert any(s.partial for s in subsets) == partial


def test_equivariance_profile_of_a_full_gcnn(full_model, image):
    x = jnp.stack([image, -image])
    angles = [0, 45, 90, 180, 270, 360]
    profile = equivariance_profile(full_model, x, angles)
    assert profile.angles_deg == tuple(float(a) for a in angles)
    assert set(profile.errors) == {n for n, _ in conv_layers(full_model)}
    for errs in profile.errors.values():
        assert len(errs) == len(angles) and np.all(np.isfinite(errs))
        for i in (0, 2, 3, 4, 5):
            assert errs[i] < 1e-4
        assert errs[1] > 1e-3  # 45 degrees is not in the group: no exact equivariance
    assert profile.to_dict()["angles_deg"] == [float(a) for a in angles]


# ----------------------------------------------------------------------------- record_features


class _TwoConvs(nnx.Module):
    """A lifting conv and two group convs, applied in an order other than the sorted attribute
    order (``lift, second, first``), so the recorded order must be the call order."""

    def __init__(self):
        kw = dict(group="se2", num_elements=4, kernel_size=3, sampling="deterministic")
        self.lift = LiftingConv(1, 3, **kw, rngs=nnx.Rngs(0))
        gkw = kw | dict(sample_per_layer=False, kernel=KernelSpec(hidden=8))
        self.first = GroupConv(3, 3, **gkw, rngs=nnx.Rngs(1))
        self.second = GroupConv(3, 3, **gkw, rngs=nnx.Rngs(2))

    def __call__(self, x):
        return self.first(self.second(self.lift(x)))


def test_record_features_sows_without_rebinding_and_leaves_the_model_unchanged(image):
    model = _TwoConvs()
    x = image[None]
    graphdef, state = nnx.split(model)
    calls = (LiftingConv.__call__, GroupConv.__call__)
    with record_features(model) as feats:
        assert (LiftingConv.__call__, GroupConv.__call__) == calls  # no class rebinding
        out = model(x)
    # The recorded features are the layer outputs computed directly, in call order.
    lifted = model.lift(x)
    second = model.second(lifted)
    want = {"lift": lifted, "second": second, "first": model.first(second)}
    assert list(feats) == ["lift", "second", "first"]
    for name, f in want.items():
        np.testing.assert_array_equal(feats[name].values, f.values)
        np.testing.assert_array_equal(feats[name].elements, f.elements)
        np.testing.assert_array_equal(feats[name].mask, f.mask)
    np.testing.assert_array_equal(feats["first"].values, out.values)
    # Nothing is left on the model: same graph, same state; a normal forward sows nothing.
    graphdef_after, state_after = nnx.split(model)
    assert graphdef_after == graphdef
    assert jax.tree.structure(state_after) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, state_after, state)
    model(x)
    assert nnx.split(model)[0] == graphdef
    assert not any(True for _ in nnx.state(model, nnx.Intermediate).flat_state())

    # The same inside a jitted function of the merged model.
    @jax.jit
    def recorded(state, x):
        m = nnx.merge(graphdef, state)
        with record_features(m) as feats:
            m(x)
        return dict(feats)

    jitted = recorded(state, x)
    for name, f in want.items():
        np.testing.assert_allclose(jitted[name].values, f.values, rtol=1e-5, atol=1e-6)


def test_record_features_refuses_nesting():
    model = _TwoConvs()
    with record_features(model):
        with pytest.raises(ValueError, match="already recording"):
            with record_features(model):
                pass
    with record_features(model):  # usable again afterwards
        pass
