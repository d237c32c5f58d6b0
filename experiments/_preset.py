"""A preset value (:class:`Preset`), the registry of presets (:data:`PRESETS`, filled by
:mod:`experiments.configs`, which defines them) and config overrides
(:func:`with_overrides`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pgcnn_jax.groups import get_group
from pgcnn_jax.models import FLAT_KERNEL_KEYS, ModelConfig
from pgcnn_jax.train import TrainConfig

CLI_OF_DATASET = {
    "mnist6_180": "mnist6",
    "mnist6_m": "mnist6",
    "rotmnist": "rotmnist",
    "cifar10": "cifar",
    "cifar100": "cifar",
    "pcam": "pcam",
    "mnist_scale": "mnist_scale",
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named run: its config, where it comes from and what the paper reports.

    Attributes:
      name: preset name.
      config: the :class:`TrainConfig`.
      source: REFERENCE 7 row(s) or how it is derived.
      paper: the paper's test accuracy (%) for this run, with the table; ``"-"`` if none.
      notes: deviations and caveats.
    """

    name: str
    config: TrainConfig
    source: str
    paper: str
    notes: str = ""

    @property
    def command(self) -> str:
        cli = CLI_OF_DATASET[self.config.dataset]
        cmd = f"python -m experiments.{cli} --preset={self.name}"
        if get_group(self.config.model.group).fixed_num_elements is None:
            cmd += f" --elems={self.config.model.num_elements}"
        return cmd

    @property
    def doc(self) -> str:
        lines = [f"{self.name}: {self.source}.", f"  command: {self.command}"]
        lines.append(f"  paper:   {self.paper}")
        if self.notes:
            lines.append(f"  notes:   {self.notes}")
        return "\n".join(lines)


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """``config`` with :class:`TrainConfig` and :class:`ModelConfig` fields replaced.

    ``model`` may be a :class:`ModelConfig` (replaces it) or a model name (``"gcnn"``).
    ``group="t2"`` implies ``num_elements=1``, deterministic sampling, ``partial=False``
    (and no per-layer sampling); ``group="mirror"`` implies ``num_elements=2`` and
    deterministic sampling, unless those fields are given too.
    """
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)} | set(FLAT_KERNEL_KEYS)
    train_kw: dict[str, Any] = {}
    model_kw: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "model" and isinstance(value, ModelConfig):
            train_kw["model"] = value
        elif key in model_fields:
            model_kw[key] = value
        elif key in train_fields:
            train_kw[key] = value
        else:
            raise ValueError(f"unknown config field {key!r}")
    implied = {}
    if "group" in model_kw:
        implied = get_group(model_kw["group"]).implied_settings().as_dict()
    model_kw = implied | model_kw
    model = train_kw.pop("model", config.model)
    if model_kw:
        model = model.replace(**model_kw)
    return config.replace(model=model, **train_kw)


PRESETS: dict[str, Preset] = {}

UNAVAILABLE_PRESETS: dict[str, str] = {}
"""Preset name -> why it is not in :data:`PRESETS` (a group it needs is not registered)."""


def add_preset(name: str, config: TrainConfig, source: str, paper: str, notes: str = "") -> None:
    if name in PRESETS:
        raise RuntimeError(f"duplicate preset {name!r}")
    PRESETS[name] = Preset(name, config, source, paper, notes)


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """The config of preset ``name`` with ``overrides`` (see :func:`with_overrides`).

    Raises:
      ValueError: for an unknown name (listing the known ones) or invalid overrides.
    """
    if name not in PRESETS:
        check_available(name)
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    return with_overrides(PRESETS[name].config, **overrides)


def check_available(name: str) -> None:
    """Raises ``ValueError`` saying why preset ``name`` is missing if it is one of
    :data:`UNAVAILABLE_PRESETS` (a group it needs is not registered); else does nothing."""
    if name in UNAVAILABLE_PRESETS:
        raise ValueError(UNAVAILABLE_PRESETS[name])
