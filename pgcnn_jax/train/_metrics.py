"""Metric sums over batches and the per-epoch ``metrics.jsonl`` log."""

from __future__ import annotations

import json
import os
from typing import Any

import jax

__all__ = ["MetricSums", "MetricsLog", "write_json"]


class MetricSums:
    """Running ``loss_sum`` / ``correct`` / ``count`` over the batches of a pass.

    Step outputs stay on the device until :meth:`flush` (no host sync per step); they are then
    added in step order in float64, so a pass split by a restart sums to the same value.
    """

    def __init__(self, loss_sum: float = 0.0, correct: int = 0, count: int = 0):
        self.loss_sum, self.correct, self.count = float(loss_sum), int(correct), int(count)
        self._pending: list[dict[str, jax.Array]] = []

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self._pending.append(metrics)

    def flush(self) -> MetricSums:
        for m in jax.device_get(self._pending):
            self.loss_sum += float(m["loss_sum"])
            self.correct += int(m["correct"])
            self.count += int(m["count"])
        self._pending = []
        return self

    @property
    def loss(self) -> float:
        self.flush()
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        self.flush()
        return self.correct / max(self.count, 1)

    def to_dict(self) -> dict[str, Any]:
        self.flush()
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented JSON atomically (temporary file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
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
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
