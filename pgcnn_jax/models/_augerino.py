"""Augerino baselines: a T(2) backbone averaged over learned input augmentations
(REFERENCE 4.4, Tables 2 and 5).

Each forward samples ``M`` elements of the configured group with the *partial random*
procedure (SE2: ``N' = min(ceil(N |theta|), N)`` angles in ``[-pi theta, pi theta)``; E2:
``R'`` angles, doubled with mirrored copies when the mirror Bernoulli fires), transforms the
whole batch by each element with a differentiable bilinear resampler
(:mod:`pgcnn_jax.models._resample`), runs the backbone once on the stacked ``[M B, H, W, C]``
batch (element-major) and returns the mean of the logits over the valid copies.

Masked execution (DESIGN 4): all ``N`` slots are always run with static shapes; invalid slots
are excluded from the backbone's normalisation statistics (so BatchNorm sees the ``M' B``
valid copies, as in the reference) and from the logit average.

Faithful to the reference: no Augerino width regulariser; the mirror parameter gets no
gradient (the flip is applied by value); the parameters are :class:`AugmentationParam`, a
plain ``nnx.Param`` subclass distinct from :class:`pgcnn_jax.nn.DistributionParam`, so the
optimiser trains them with the main learning rate. **Deliberate difference:** the reference's
``affine_grid(align_corners=True)`` / ``grid_sample(align_corners=False)`` mismatch (a slight
zoom-out and half-pixel blur of every copy, even at angle 0) is *not* reproduced; the
rotation direction is the library's group action (the sampled interval is symmetric, so the
distribution of copies is the same).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pgcnn_jax.models._ckresnet import CKResNet
from pgcnn_jax.models._common import check_images
from pgcnn_jax.models._config import ModelConfig
from pgcnn_jax.models._gcnn import GCNN
from pgcnn_jax.nn import distribution_values, set_distribution

# The relaxed-Bernoulli temperature only scales straight-through gradients; the mirror
# receives none here, so a constant suffices.
_MIRROR_TEMPERATURE = 0.5


class AugmentationParam(nnx.Param):
    """A parameter of Augerino's learned augmentation distribution (``theta`` and the mirror
    parameter). Unlike :class:`pgcnn_jax.nn.DistributionParam` it uses the main lr."""


def t2_backbone_config(config: ModelConfig, model: str) -> ModelConfig:
    """The backbone of an Augerino model: the same architecture as a T(2) CNN."""
    return config.replace(
        model=model,
        group="t2",
        group_options=(),
        num_elements=1,
        sampling="deterministic",
        partial=False,
        sample_per_layer=False,
        sample_per_batch_element=False,
    )


class _Augerino(nnx.Module):
    _backbone_cls: type = CKResNet
    _backbone_name: str = "ckresnet"

    def __init__(self, config: ModelConfig, *, num_classes: int, in_features: int, rngs):
        group = config.make_group()
        distribution = group.distribution(config.num_elements, "random")
        if not distribution:
            raise ValueError(
                f"{type(self).__name__} needs a group with rotations (num_elements > 1) or "
                f"mirrors to augment with, got group {config.group!r} with num_elements="
                f"{config.num_elements}"
            )
        self.config = config
        self.group = group
        self.num_elements = config.num_elements
        self.in_features = in_features
        self.backbone = self._backbone_cls(
            t2_backbone_config(config, self._backbone_name),
            num_classes=num_classes,
            in_features=in_features,
            rngs=rngs,
        )
        # the augmentation distribution: the group's partial random one, its parameters
        # stored under their names (``theta``, ``mirror``, ...) as AugmentationParam
        set_distribution(self, distribution, AugmentationParam)

    def sample_augmentations(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Elements ``[N, d]`` and mask ``[N]`` of one forward (partial random sampling)."""
        elements, mask = self.group.sample(
            key,
            self.num_elements,
            sampling="random",
            partial=True,
            params=distribution_values(self),
            temperature=_MIRROR_TEMPERATURE,
        )
        return elements[0], mask[0]

    def __call__(self, x: jax.typing.ArrayLike, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits ``[B, num_classes]``: the mean over valid augmented copies."""
        x = check_images(x, self.in_features, type(self).__name__)
        if rngs is None:
            raise ValueError(f"{type(self).__name__} samples augmentations: pass rngs=nnx.Rngs")
        elements, mask = self.sample_augmentations(rngs.sample())
        # A flip is a value, not a differentiable path.
        copies = self.group.transform_images(x, self.group.detach_discrete(elements))
        m, b = copies.shape[:2]
        batch_mask = jnp.repeat(mask, b)  # element-major, like the stacked copies
        logits = self.backbone(
            copies.reshape(m * b, *copies.shape[2:]), rngs=rngs, batch_mask=batch_mask
        )
        logits = logits.reshape(m, b, -1)
        weights = mask.reshape(m, 1, 1)
        return jnp.sum(logits * weights, axis=0) / jnp.sum(mask)


class AugerinoCKResNet(_Augerino):
    """Augerino over a T(2) :class:`CKResNet` backbone (REFERENCE 4.4).

    ``__call__(x [B, H, W, C_in], *, rngs) -> logits [B, num_classes]``; ``rngs.sample``
    draws the augmentations. ``config.partial`` and the sampling flags configure nothing here:
    the backbone is always T(2) and the augmentation always samples the learned interval.
    """

    _backbone_cls = CKResNet
    _backbone_name = "ckresnet"


class AugerinoGCNN(_Augerino):
    """Augerino over a T(2) :class:`GCNN` backbone (REFERENCE 4.4)."""

    _backbone_cls = GCNN
    _backbone_name = "gcnn"
