"""Typed records of a run: one :class:`EpochRecord` per line of ``metrics.jsonl`` and the
:class:`RunResults` of ``results.json``.

On disk both are flat JSON objects (the format every version wrote): the parts the two share
(:class:`LayerStats`, the learned subsets; :class:`TestScores`, a test pass) are spliced into
the parent object. :meth:`from_dict` reads what older versions wrote: a key they did not
write yet reads as its field's default (mostly ``None``), a key this version does not know is
kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from pgcnn_jax.train._state import augmentation_values, layer_summary

__all__ = ["EpochRecord", "LayerStats", "RunResults", "TestScores"]


def _nested(cls: type) -> Any:
    """A field holding a record whose keys are spliced into its parent's JSON object."""
    return dataclasses.field(default_factory=cls, metadata={"nested": cls})


class _Record:
    """Flat-JSON (de)serialisation of a record dataclass (see the module doc)."""

    #: keys that must be present when reading (the rest read as ``None`` when absent)
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    #: boolean flags written only when true
    FLAGS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                continue
            if "nested" in f.metadata:
                out.update(value.to_dict())
            elif f.name not in self.FLAGS or value:
                out[f.name] = value
        return out | dict(getattr(self, "extra", None) or {})

    @classmethod
    def _take(cls, d: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments from ``d`` (an absent key: the field's default),
        removing the keys used from ``d``."""
        missing = [k for k in cls.REQUIRED if k not in d]
        if missing:
            raise ValueError(f"a {cls.__name__} needs the key(s) {missing}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if "nested" in f.metadata:
                kwargs[f.name] = f.metadata["nested"]._from(d)
            elif f.name != "extra" and f.name in d:
                kwargs[f.name] = d.pop(f.name)
        return kwargs

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Any:
        return cls(**cls._take(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """The record of a JSON object written by :meth:`to_dict` (of this or an older
        version); ``ValueError`` when ``d`` is not a dict or lacks a required key."""
        if not isinstance(d, dict):
            raise ValueError(f"a {cls.__name__} is read from a JSON object, got {d!r:.80}")
        rest = dict(d)
        kwargs = cls._take(rest)
        if any(f.name == "extra" for f in dataclasses.fields(cls)):
            kwargs["extra"] = rest
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class LayerStats(_Record):
    """What the partial layers learned (per layer, from
    :func:`~pgcnn_jax.train.layer_summary`) and Augerino's augmentation parameters."""

    theta: list | None = None
    mirror_prob: list | None = None
    elements: list | None = None
    axes: list | None = None  # per layer: every axis's kept count, size and width
    augmentation: list | None = None

    @classmethod
    def of(cls, model: Any) -> LayerStats:
        layers = layer_summary(model)
        return cls(
            theta=layers["theta"],
            mirror_prob=layers["mirror_prob"],
            elements=layers["elements"],
            axes=layers["axes"],
            augmentation=augmentation_values(model),
        )


@dataclasses.dataclass(frozen=True)
class TestScores(_Record):
    """A test pass (``test_accuracy``: of the mean softmax of ``eval_samples`` passes; ``test_
    accuracies``: of each single pass)."""

    test_accuracy: float | None = None
    test_accuracies: list[float] | None = None
    eval_samples: int | None = None
    test_examples: int | None = None
    test_loss: float | None = None

    @classmethod
    def of(cls, sums: Any) -> TestScores:
        """The scores of an :class:`~pgcnn_jax.train.EvalSums`."""
        return cls(
            test_accuracy=sums.accuracy,
            test_accuracies=sums.accuracies,
            eval_samples=sums.samples,
            test_examples=sums.count,
            test_loss=sums.loss,
        )


@dataclasses.dataclass(frozen=True)
class EpochRecord(_Record):
    """One line of ``metrics.jsonl``: an epoch's training pass and validation.

    ``partial_epoch``: ``max_steps`` stopped the run inside the epoch (written only when
    true); ``lr`` / ``lr_probs``: the rates of the epoch's last step; ``grad_snr`` /
    ``grad_mean``: per partial layer and distribution parameter, ``|mean| / std`` of its
    gradient over the epoch's steps and the mean gradient."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("epoch",)
    FLAGS: ClassVar[tuple[str, ...]] = ("partial_epoch",)

    epoch: int = 0
    step: int | None = None
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_accuracies: list[float] | None = None
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    lr: float | None = None
    lr_probs: float | None = None
    stats: LayerStats = _nested(LayerStats)
    grad_snr: list | None = None
    grad_mean: list | None = None
    seconds: float | None = None
    partial_epoch: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunResults(_Record):
    """``results.json``: the test of the selected model and how the run went.

    ``layers``: the partial layers' names (the order of ``stats``); ``config``: the
    :meth:`~pgcnn_jax.train.TrainConfig.to_dict` of the run; ``seconds``: wall clock of all
    sessions; ``session_start_step`` / ``session_seconds``: where the last session started and
    how long it ran."""

    test: TestScores = _nested(TestScores)
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    steps: int | None = None
    stop_reason: str | None = None
    num_params: int | None = None
    layers: list[str] | None = None
    stats: LayerStats = _nested(LayerStats)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: Any = None
    num_devices: int | None = None
    seconds: float | None = None
    session_start_step: int | None = None
    session_seconds: float | None = None
    versions: dict[str, str] | None = None
    date: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def eval_samples(self) -> int:
        """``K`` of the test pass: the recorded one, else the config's, else 1 (runs from
        before the setting existed made one stochastic pass)."""
        k = self.test.eval_samples
        return int(self.config.get("eval_samples", 1) if k is None else k)
