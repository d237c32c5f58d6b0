"""The figures of :mod:`experiments.figures` (Figures 4, 5/6 and equivariance): each takes the
run directories, their restored models and configs, and returns ``(matplotlib figure, the
JSON record)``."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pgcnn_jax.analysis import equivariance_profile, learned_subsets, rotation_response
from pgcnn_jax.data import get_spec, load_splits
from pgcnn_jax.groups import get_group
from pgcnn_jax.train import RunFiles, TrainConfig

__all__ = [
    "FIG4_ANGLES",
    "check_equivariance",
    "check_fig4",
    "figure4",
    "figure_equivariance",
    "figure_subsets",
    "run_label",
]

FIG4_ANGLES = tuple(range(-180, 181))
_FIG4_DATASETS = ("mnist6_180", "mnist6_m")


# ----------------------------------------------------------------------------- helpers
def run_label(config: TrainConfig) -> str:
    """``"partial G-CNN (SE2, N=4)"``, ``"G-CNN (E2, N=8)"``, ``"Augerino (SE2, N=8)"`` or
    ``"CNN (T2)"``."""
    m = config.model
    if get_group(m.group).fixed_num_elements == 1:  # the trivial group: a plain CNN
        return "CNN (T2)"
    kind = "partial G-CNN" if m.partial else "G-CNN"
    if m.model.startswith("augerino"):
        kind = "Augerino"
    return f"{kind} ({m.group.upper()}, N={m.num_elements})"


def _labels(runs: Sequence[str], configs: Sequence[TrainConfig]) -> list[str]:
    labels = [run_label(c) for c in configs]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label} [{os.path.basename(os.path.normpath(runs[i]))}]"
    return labels


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _figure(width: float, height: float):
    # The object API renders with Agg and touches no global pyplot / backend state.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _test_examples(
    config: TrainConfig, data: str | None, data_dir: str | None
) -> Iterator[tuple[int, np.ndarray, int]]:
    """``(position, image [H, W, C] normalised, label)`` of the run's test split, in order."""
    splits = load_splits(config, data=data or None, data_dir=data_dir or None)
    position = 0
    for batch in splits.test.epoch(0):
        for image, label in zip(batch["image"], batch["label"], strict=True):
            yield position, np.asarray(image, np.float32), int(label)
            position += 1


def _test_accuracy(workdir: str) -> float | None:
    """The ``test_accuracy`` of the run's ``results.json`` (``None`` when it has none)."""
    try:
        results = RunFiles(workdir).read_results()
    except (OSError, ValueError):
        return None
    return None if results is None else results.test.test_accuracy


# ----------------------------------------------------------------------------- figure 4
def check_fig4(runs: Sequence[str], configs: Sequence[TrainConfig], index: int) -> None:
    for workdir, config in zip(runs, configs, strict=True):
        if config.dataset not in _FIG4_DATASETS:
            raise ValueError(
                f"--fig=4 needs MNIST6 runs ({', '.join(_FIG4_DATASETS)}); {workdir!r} is a "
                f"{config.dataset!r} run"
            )
    if index < 0:
        raise ValueError(f"--index must be >= 0, got {index}")


def figure4(runs, models, configs, *, index, seed, batch, data, data_dir) -> tuple[Any, dict]:
    check_fig4(runs, configs, index)
    found = None
    count = 0
    for position, image, label in _test_examples(configs[0], data, data_dir):
        if label == 0:
            if count == index:
                found = (position, image)
                break
            count += 1
    if found is None:
        raise ValueError(
            f"--index={index}: the test split of {runs[0]!r} has only {count} images of class 0"
        )
    position, image = found
    spec = get_spec(configs[0].dataset)
    black = [-m / s for m, s in zip(spec.mean, spec.std, strict=True)]
    # Counter-clockwise on screen (TF.rotate) is the group rotation by minus the angle.
    angles = list(FIG4_ANGLES)
    labels = _labels(runs, configs)
    entries = []
    for workdir, model, label in zip(runs, models, labels, strict=True):
        probs = rotation_response(
            model, image, [-a for a in angles], seed=seed, batch=batch, fill=black
        )
        entries.append(
            {
                "run": workdir,
                "label": label,
                "p_class0": [float(p) for p in probs[:, 0]],
                "test_accuracy": _test_accuracy(workdir),
            }
        )
    record = {
        "figure": "4",
        "date": _now(),
        "dataset": configs[0].dataset,
        "image": {"class0_index": index, "test_index": position, "label": 0},
        "angles_deg": angles,
        "angle_convention": "counter-clockwise on screen (torchvision TF.rotate), bilinear, "
        "black fill",
        "seed": seed,
        "runs": entries,
    }

    fig = _figure(9.0, 3.2)
    ax_img, ax = fig.subplots(1, 2, width_ratios=[1, 3.5])
    ax_img.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
    ax_img.set_title(f"test image {position}")
    ax_img.set_axis_off()
    ax.axvspan(-90, 90, color="0.93", zorder=0)
    for entry in entries:
        ax.plot(angles, entry["p_class0"], label=entry["label"])
    ax.set_xlim(-180, 180)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(range(-180, 181, 45))
    ax.set_xlabel("input rotation (degrees, counter-clockwise)")
    ax.set_ylabel('P("6")')
    ax.legend(loc="lower center", fontsize="small")
    return fig, record


# ----------------------------------------------------------------------------- subsets
def _n_prime(layer: dict[str, Any]) -> int:
    """Elements the layer uses: the product of the counts kept on its group's axes
    (rotations, doubled when mirrors are kept with probability >= 1/2, times the scales kept,
    ...)."""
    return int(np.prod([axis["kept"] for axis in layer["axes"].values()]))


def _axis(layer: dict[str, Any], axis: str, key: str) -> Any:
    """``key`` of the layer's ``axis`` (``None`` when its group lacks the axis)."""
    return layer["axes"].get(axis, {}).get(key)


def _extra_axes(entries) -> list[str]:
    """Axes beyond the rotations and mirrors (e.g. scales) of any layer, in first-seen order:
    one more panel each, showing the fraction of the axis kept."""
    names: list[str] = []
    for entry in entries:
        for layer in entry["layers"]:
            for name in layer["axes"]:
                if name not in ("rotation", "mirror") and name not in names:
                    names.append(name)
    return names


def figure_subsets(runs, models, configs, *, seed) -> tuple[Any, dict]:
    labels = _labels(runs, configs)
    entries = []
    for workdir, model, config, label in zip(runs, models, configs, labels, strict=True):
        x = np.zeros((1, *get_spec(config.dataset).image_shape), np.float32)
        layers = [s.to_dict() for s in learned_subsets(model, x, seed=seed)]
        for layer in layers:
            layer["n_prime"] = _n_prime(layer)
        entries.append(
            {"run": workdir, "label": label, "group": config.model.group, "layers": layers}
        )
    record = {"figure": "subsets", "date": _now(), "runs": entries}

    mirrors = any(
        _axis(layer, "mirror", "width") is not None for e in entries for layer in e["layers"]
    )
    extra = _extra_axes(entries)
    rows = max(len(e["layers"]) for e in entries)
    columns = 1 + int(mirrors) + len(extra)
    fig = _figure(5.0 + 2.5 * (columns - 1), (0.35 * rows + 1.0) * len(entries))
    axes = np.asarray(fig.subplots(len(entries), columns, squeeze=False))
    for row, entry in zip(axes, entries, strict=True):
        layers = entry["layers"]
        ys = np.arange(len(layers))[::-1]
        ax = row[0]
        for y, layer in zip(ys, layers, strict=True):
            interval = _axis(layer, "rotation", "interval_deg")
            if interval is None:
                continue
            lo, hi = (float(np.clip(v, -180.0, 180.0)) for v in interval)
            ax.barh(y, hi - lo, left=lo, color="C0" if layer["partial"] else "0.6")
        ticks = [f"{layer['name']} (N'={layer['n_prime']})" for layer in layers]
        ax.set_yticks(ys, ticks, fontsize="small")
        ax.set_xlim(-180, 180)
        ax.set_xticks(range(-180, 181, 90))
        ax.set_xlabel("kept rotations (degrees)")
        ax.set_title(entry["label"], fontsize="medium")
        if mirrors:
            ax = row[1]
            probs = [_axis(layer, "mirror", "width") for layer in layers]
            if all(p is None for p in probs):
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no mirrors", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.barh(ys, [0.0 if p is None else p for p in probs], color="C1")
                ax.set_yticks(ys, [])
                ax.set_xlim(0, 1)
                ax.set_xlabel("mirror probability")
        for ax, name in zip(row[1 + int(mirrors) :], extra, strict=True):
            kept = [layer["axes"].get(name) for layer in layers]
            if all(k is None for k in kept):
                ax.set_axis_off()
                ax.text(
                    0.5, 0.5, f"no {name} axis", ha="center", va="center", transform=ax.transAxes
                )
                continue
            fractions = [0.0 if k is None else k["kept"] / k["of"] for k in kept]
            colors = ["C2" if layer["partial"] else "0.6" for layer in layers]
            ax.barh(ys, fractions, color=colors)
            for y, k in zip(ys, kept, strict=True):
                if k is not None:
                    ax.text(0.02, y, f"{k['kept']}/{k['of']}", va="center", fontsize="small")
            ax.set_yticks(ys, [])
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"kept {name} (fraction)")
    return fig, record


# ----------------------------------------------------------------------------- equivariance
def check_equivariance(step: float, num_images: int) -> None:
    if not 0 < step <= 360:
        raise ValueError(f"--step must be in (0, 360] degrees, got {step}")
    if num_images < 1:
        raise ValueError(f"--num_images must be >= 1, got {num_images}")


def figure_equivariance(
    runs, models, configs, *, step, num_images, seed, data, data_dir
) -> tuple[Any, dict]:
    check_equivariance(step, num_images)
    count = int(np.floor(360.0 / step + 1e-9))
    angles = [float(i * step) for i in range(count + 1)]
    angles = [int(a) if a.is_integer() else a for a in angles]
    labels = _labels(runs, configs)
    cache: dict[tuple, tuple[list[int], np.ndarray]] = {}
    entries = []
    for workdir, model, config, label in zip(runs, models, configs, labels, strict=True):
        source = (config.dataset, data or config.data, data_dir or config.data_dir)
        source += (config.rot_interval, config.seed)
        if source not in cache:
            picked = []
            for example in _test_examples(config, data, data_dir):
                picked.append(example)
                if len(picked) == num_images:
                    break
            cache[source] = ([p for p, _, _ in picked], np.stack([im for _, im, _ in picked]))
        positions, x = cache[source]
        profile = equivariance_profile(model, x, angles, seed=seed)
        errors = {k: [float(e) for e in v] for k, v in profile.errors.items()}
        entries.append(
            {
                "run": workdir,
                "label": label,
                "dataset": config.dataset,
                "test_indices": positions,
                "errors": errors,
            }
        )
    record = {
        "figure": "equivariance",
        "date": _now(),
        "angles_deg": angles,
        "measure": "||P(h(R x)) - R P(h(x))|| / ||R P(h(x))|| in the central disc, P = max "
        "over the group axis; rotations as pgcnn_jax.analysis.rotate_images",
        "seed": seed,
        "runs": entries,
    }

    fig = _figure(4.2 * len(entries) + 0.5, 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(entries), sharey=True, squeeze=False)[0])
    for ax, entry in zip(axes, entries, strict=True):
        for name, errs in entry["errors"].items():
            ax.plot(angles, errs, marker="." if len(angles) <= 40 else None, label=name)
        for a in (90, 180, 270):
            ax.axvline(a, color="0.85", lw=0.8, zorder=0)
        ax.set_xlim(0, 360)
        ax.set_xticks(range(0, 361, 90))
        ax.set_xlabel("input rotation (degrees)")
        ax.set_title(entry["label"], fontsize="medium")
        ax.legend(fontsize="x-small")
    axes[0].set_ylabel("relative equivariance error")
    return fig, record
