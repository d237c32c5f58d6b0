"""The device mesh of a run: batches sharded along ``data``, state replicated (DESIGN 1).

One process sees its local devices; a multi-host run calls ``jax.distributed.initialize()``
first, after which ``jax.devices()`` lists every host's devices and the same code shards the
global batch over all of them (each process places the rows its devices hold).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "check_devices",
    "data_mesh",
    "pad_size",
    "prefetch",
    "put_batch",
    "replicated",
]

DATA_AXIS = "data"


def check_devices(devices: int | None, batch_size: int | None = None) -> int:
    """The number of devices a run uses: ``devices`` (``None``: all of them), checked against
    the devices this process sees and the batch size (``ValueError`` naming both)."""
    available = jax.device_count()
    if devices is None:
        devices = available
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ValueError(f"devices must be None or a positive int, got {devices!r}")
    if devices > available:
        raise ValueError(
            f"devices={devices} but only {available} {jax.default_backend()} device(s) are "
            "available; pass --devices with at most that many"
        )
    if jax.process_count() > 1 and devices != available:
        raise ValueError(
            f"devices={devices}: a multi-host run uses every device of every host "
            f"({available}); leave --devices unset"
        )
    if batch_size is not None and batch_size % devices:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by devices={devices}: every device "
            "takes an equal share of the batch; choose a batch size that is a multiple of "
            "the device count or pass --devices"
        )
    return devices


def data_mesh(devices: int | None = None, batch_size: int | None = None) -> Mesh:
    """A one-axis :class:`~jax.sharding.Mesh` (axis ``"data"``) of the first ``devices``
    devices (:func:`check_devices`)."""
    n = check_devices(devices, batch_size)
    return Mesh(np.asarray(jax.devices()[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (model and optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split along ``data``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def pad_size(size: int, mesh: Mesh) -> int:
    """``size`` rounded up to a multiple of the device count."""
    n = mesh.size
    return -(-size // n) * n


def put_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Starts the transfer of a host batch to the mesh, split along the batch axis
    (asynchronous: returns at once). In a multi-host run every process holds the same global
    batch and places the rows of its own devices."""
    sharding = batch_sharding(mesh)
    for name, x in batch.items():
        if np.shape(x)[0] % mesh.size:
            raise ValueError(
                f"batch[{name!r}] has {np.shape(x)[0]} rows, not a multiple of the "
                f"{mesh.size} devices"
            )
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return {
        name: jax.make_array_from_callback(np.shape(x), sharding, lambda idx, x=x: x[idx])
        for name, x in batch.items()
    }


def prefetch(batches: Iterable[dict[str, Any]], mesh: Mesh) -> Iterator[dict[str, jax.Array]]:
    """``batches`` placed on ``mesh`` one step ahead: batch ``i + 1`` is on its way to the
    devices before batch ``i`` is handed out (and its step dispatched)."""
    queue: collections.deque = collections.deque()
    for batch in batches:
        queue.append(put_batch(batch, mesh))
        if len(queue) > 1:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
