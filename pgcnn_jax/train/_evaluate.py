"""``evaluate``: one evaluation pass over a split (REFERENCE 5.4, DESIGN 5)."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from pgcnn_jax.train._mesh import data_mesh, pad_size, prefetch, replicated
from pgcnn_jax.train._metrics import MetricSums
from pgcnn_jax.train._sampled import eval_samples_state, example_keys
from pgcnn_jax.train._specs import EvalSettings
from pgcnn_jax.train._steps import eval_state

__all__ = ["EvalSums", "evaluate"]


def _padded(
    batch: dict[str, np.ndarray], size: int, lengths: list[int] | None = None
) -> dict[str, np.ndarray]:
    """``batch`` zero-padded to ``size`` examples with a ``mask`` of the real ones (their
    number appended to ``lengths``)."""
    n = len(batch["label"])
    if n > size:
        raise ValueError(f"a batch of {n} examples cannot be padded to {size}")
    if lengths is not None:
        lengths.append(n)
    pad = size - n
    out = {
        "image": np.concatenate([batch["image"], np.zeros((pad, *batch["image"].shape[1:]), "f4")]),
        "label": np.concatenate([batch["label"], np.zeros((pad,), batch["label"].dtype)]),
    }
    out["mask"] = (np.arange(size) < n).astype(np.float32)
    return out


class EvalSums(MetricSums):
    """:class:`MetricSums` of an evaluation (of the averaged prediction when ``samples > 1``)
    plus the correct predictions of each single pass (``pass_correct``, ``samples`` entries)."""

    def __init__(self, samples: int = 1):
        super().__init__()
        self.samples = samples
        self.pass_correct = [0] * samples
        self._passes: list[jax.Array] = []

    def add(self, metrics: dict[str, jax.Array]) -> None:
        metrics = dict(metrics)
        self._passes.append(metrics.pop("pass_correct", metrics["correct"][None]))
        super().add(metrics)

    def flush(self) -> EvalSums:
        for p in jax.device_get(self._passes):
            self.pass_correct = [a + int(b) for a, b in zip(self.pass_correct, p, strict=True)]
        self._passes = []
        super().flush()
        return self

    @property
    def accuracies(self) -> list[float]:
        """Accuracy of each single pass."""
        self.flush()
        return [c / max(self.count, 1) for c in self.pass_correct]


def evaluate(
    model, loader, key: jax.Array, settings: EvalSettings, *, mesh: Mesh | None = None
) -> EvalSums:
    """One evaluation of ``loader`` in eval mode with ``settings.samples`` passes (``settings``:
    an :class:`EvalSettings`, e.g. ``EvalSettings.of(config)``).

    ``samples == 1``: one stochastic pass like the reference; batch ``i`` samples its group
    elements with ``fold_in(key, i)``, shared by the batch. ``samples = K > 1``: example ``j``
    of the split (stored order) gets the key ``fold_in(key, j)`` and is evaluated on its own
    ``K`` times (:func:`~pgcnn_jax.train._sampled.eval_samples_state`); the prediction is the
    mean softmax, independent of the batch size and of the other examples of a batch. The
    loss includes the penalties of ``settings.objective``.

    Batches are split over the devices of ``settings.devices`` (``mesh``: a
    :func:`~pgcnn_jax.train.data_mesh` instead). Every batch, a smaller last one included,
    is zero-padded to the loader's batch size rounded up to a multiple of the device count
    and masked, so one compiled evaluation step serves every split.
    """
    if not isinstance(settings, EvalSettings):
        raise ValueError(
            f"settings must be an EvalSettings (EvalSettings.of(config)), got "
            f"{type(settings).__name__}"
        )
    samples, objective = settings.samples, settings.objective
    mesh = data_mesh(settings.devices) if mesh is None else mesh
    size = pad_size(loader.batch_size, mesh)
    model.eval()
    model_def, model_state = nnx.split(model)
    model_state = jax.device_put(model_state, replicated(mesh))  # placed once, not per batch
    sums = EvalSums(samples)
    start = 0
    lengths = []
    batches = prefetch((_padded(b, size, lengths) for b in loader.epoch(0)), mesh)
    for i, padded in enumerate(batches):
        if samples == 1:
            key_i = jax.random.fold_in(key, i)
            out = eval_state(model_def, model_state, padded, key_i, objective=objective, mesh=mesh)
        else:
            keys = jax.device_put(example_keys(key, start, size), padded["label"].sharding)
            out = eval_samples_state(
                model_def, model_state, padded, keys, samples=samples, objective=objective,
                per_example=settings.per_example, mesh=mesh,
            )  # fmt: skip
        sums.add(out)
        start += lengths[i]
    return sums.flush()
