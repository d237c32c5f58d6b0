"""Metric sums over batches, the per-epoch ``metrics.jsonl`` log and strict JSON files."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import numpy as np

__all__ = ["MetricSums", "MetricsLog", "strict_json", "write_json"]


class MetricSums:
    """Running ``loss_sum`` / ``correct`` / ``count`` over the batches of a pass, and
    ``nonfinite``: the number of steps whose loss or updated state was not finite.

    Training steps also report ``dist_grad``, the gradient of the distribution parameters:
    its sum and sum of squares over the steps (``grad_sum``, ``grad_sq``, ``grad_steps``) give
    the per-parameter signal-to-noise ratio :meth:`grad_snr` (mean over standard deviation
    across the steps of the pass).

    Step outputs stay on the device until :meth:`flush` (no host sync per step); they are then
    added in step order in float64, so a pass split by a restart sums to the same value.
    """

    def __init__(
        self,
        loss_sum: float = 0.0,
        correct: int = 0,
        count: int = 0,
        nonfinite: int = 0,
        grad_sum: list[float] | None = None,
        grad_sq: list[float] | None = None,
        grad_steps: int = 0,
    ):
        self.loss_sum, self.correct, self.count = float(loss_sum), int(correct), int(count)
        self.nonfinite = int(nonfinite)
        self.grad_sum = None if grad_sum is None else np.asarray(grad_sum, np.float64)
        self.grad_sq = None if grad_sq is None else np.asarray(grad_sq, np.float64)
        self.grad_steps = int(grad_steps)
        self._pending: list[dict[str, jax.Array]] = []

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self._pending.append(metrics)

    def flush(self, keep: int = 0) -> MetricSums:
        """Adds the pending step outputs on the host, all but the newest ``keep`` (which may
        still be computing: reading only older ones does not wait for the device)."""
        n = max(len(self._pending) - keep, 0)
        for m in jax.device_get(self._pending[:n]):
            self.loss_sum += float(m["loss_sum"])
            self.correct += int(m["correct"])
            self.count += int(m["count"])
            self.nonfinite += int(m.get("nonfinite", 0))
            if "dist_grad" in m:
                self._add_grad(np.asarray(m["dist_grad"], np.float64))
        self._pending = self._pending[n:]
        return self

    def _add_grad(self, g: np.ndarray) -> None:
        if self.grad_sum is None or self.grad_sum.shape != g.shape:
            # a new pass, or the model's distribution parameters changed: start again
            self.grad_sum, self.grad_sq, self.grad_steps = np.zeros_like(g), np.zeros_like(g), 0
        self.grad_sum += g
        self.grad_sq += g * g
        self.grad_steps += 1

    def grad_snr(self) -> np.ndarray:
        """Per distribution-parameter entry: ``|mean| / std`` of its gradient over the steps
        of the pass (population std; ``inf`` where the std is 0 and the mean is not, ``nan``
        with fewer than 2 steps or a zero gradient). Empty without any gradient."""
        self.flush()
        if self.grad_sum is None or self.grad_steps == 0:
            return np.zeros((0,))
        n = self.grad_steps
        mean = self.grad_sum / n
        var = np.maximum(self.grad_sq / n - mean**2, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.abs(mean) / np.sqrt(var)
        return snr if n >= 2 else np.full_like(snr, np.nan)

    def grad_mean(self) -> np.ndarray:
        """Per distribution-parameter entry: the mean gradient over the steps of the pass."""
        self.flush()
        if self.grad_sum is None or self.grad_steps == 0:
            return np.zeros((0,))
        return self.grad_sum / self.grad_steps

    @property
    def pending(self) -> int:
        """Step outputs not yet added on the host."""
        return len(self._pending)

    @property
    def flushed_finite(self) -> bool:
        """:attr:`finite` of the steps added on the host so far (no flush, no device wait)."""
        return self.nonfinite == 0 and math.isfinite(self.loss_sum)

    @property
    def loss(self) -> float:
        self.flush()
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        self.flush()
        return self.correct / max(self.count, 1)

    @property
    def finite(self) -> bool:
        """No step of the pass had a non-finite loss or state, and the loss sum is finite."""
        self.flush()
        return self.nonfinite == 0 and math.isfinite(self.loss_sum)

    def to_dict(self) -> dict[str, Any]:
        self.flush()
        out = {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}
        if self.nonfinite:
            out["nonfinite"] = self.nonfinite
        if self.grad_sum is not None:
            out["grad_sum"] = self.grad_sum.tolist()
            out["grad_sq"] = self.grad_sq.tolist()
            out["grad_steps"] = self.grad_steps
        return out


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by ``None``: what JSON can
    represent (``json.dumps`` would write the invalid tokens ``NaN`` / ``Infinity``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented strict JSON (:func:`strict_json`) atomically (temporary
    file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(strict_json(obj), f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per completed epoch, in epoch order."""

    def __init__(self, path: str):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        records = []
        with open(self.path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: it and anything after are dropped
        return records

    def truncate(self, num_epochs: int) -> None:
        """Keeps the records of epochs ``< num_epochs`` (those a resumed run will not redo)."""
        kept = [r for r in self.read() if r.get("epoch", num_epochs) < num_epochs]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            for r in kept:
                f.write(json.dumps(strict_json(r), allow_nan=False) + "\n")
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
