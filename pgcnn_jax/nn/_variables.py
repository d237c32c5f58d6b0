"""Variable types of partial equivariance (STYLE 10)."""

from __future__ import annotations

from flax import nnx


class DistributionParam(nnx.Param):
    """A parameter of a learned distribution over the group (``theta``, the mirror parameter,
    per-element keep parameters). Trained with its own learning rate (``lr_probs``)."""


class GumbelStep(nnx.Variable):
    """Per-layer count of training forwards, driving the relaxed-Bernoulli temperature."""


class KernelNorm(nnx.Variable):
    """``||K||_2 + ||b||_2`` of the kernel a conv rendered in its last call (REFERENCE 5.1);
    read it right after a forward pass, e.g. ``nnx.state(model, KernelNorm)``."""
