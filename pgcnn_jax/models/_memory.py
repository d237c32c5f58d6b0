"""How much memory rendering a model's kernels takes, checked before the model is built."""

from __future__ import annotations

import os

import jax

from pgcnn_jax.models._common import block_widths
from pgcnn_jax.models._config import ModelConfig
from pgcnn_jax.nn import per_example_chunk, rendered_kernel_size

__all__ = ["available_memory", "check_kernel_memory", "kernel_memory_bytes", "rendered_sets"]

_FALLBACK_LIMIT = 64 * 2**30  # when neither the device nor the host reports its memory
_FLOAT_BYTES = 4


def kernel_memory_bytes(config: ModelConfig, *, in_features: int, num_samples: int = 1) -> int:
    """Bytes of the largest kernel rendering of one forward + backward pass (an estimate).

    For the group convolution with the most channels ``C_in C_out`` (the lifting
    convolution when it is larger), the kernel net evaluates
    ``S N_out N_in k^2`` points (``k`` the rendered size, larger than ``kernel_size`` for
    scaling groups: :func:`pgcnn_jax.nn.rendered_kernel_size`): its input, its
    ``kernel.layers - 1`` hidden activations (kept for the backward pass) and its output, plus
    the rendered HWIO kernel of the same size as the output::

        4 S N^2 k^2 (2 + d + (L - 1) H + 2 C_in C_out)   bytes (float32)

    ``num_samples`` is ``S``: 1, or the batch size with ``sample_per_batch_element``. The
    feature maps and the convolutions themselves come on top. Separable group convs
    (``config.separable``) render ``psi_G`` on ``S N^2`` points and ``psi_S`` on ``S N k^2``::

        4 S (N^2 (d + (L - 1) H + 2 C_in C_out) + N k^2 (2 + (L - 1) H + 2 C_out))
    """
    group = config.make_group()
    n, h, layers = config.num_elements, config.kernel.hidden, config.kernel.layers
    k = rendered_kernel_size(group, n, config.kernel_size)
    widths = block_widths(config)
    channels = max(b * max(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
    hidden = max(layers - 1, 0) * h
    if config.separable:
        c_out = max(widths)
        group_conv = n * n * (group.dim + hidden + 2 * channels)
        group_conv += n * k * k * (2 + hidden + 2 * c_out)
    else:
        group_conv = n * n * k * k * (2 + group.dim + hidden + 2 * channels)
    lifting = n * k * k * (2 + hidden + 2 * in_features * widths[0])
    return _FLOAT_BYTES * num_samples * max(group_conv, lifting)


def rendered_sets(config: ModelConfig, batch_size: int) -> int:
    """Element sets whose kernels are in memory at once in a forward + backward pass at
    ``batch_size``: 1 with shared sampling; with ``sample_per_batch_element`` the chunk of
    :func:`pgcnn_jax.nn.per_example_chunk` examples (kernels rendered chunk by chunk), or the
    whole batch for kernel nets that reduce over the points (``mlp_*``: their BatchNorm
    statistics span every example's kernel, so all ``B`` are rendered together) and separable
    group convs (their factors, ``k^2`` times smaller, are rendered for all ``B`` at once).
    The ``num_samples`` of :func:`kernel_memory_bytes` / :func:`check_kernel_memory`."""
    if not config.sample_per_batch_element:
        return 1
    if config.kernel.reduces_over_points or config.separable:
        return batch_size
    return min(batch_size, per_example_chunk())


def available_memory() -> tuple[int, str]:
    """``(bytes, where)``: the first device's memory limit when it reports one (GPU, TPU),
    else the host's physical memory, else a fixed 64 GiB."""
    device = jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends do not implement memory_stats
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory"
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_LIMIT, "assumed limit"


def _size(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if num < 1024 or unit == "PiB":
            return f"{num:.1f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")


def check_kernel_memory(
    config: ModelConfig,
    *,
    in_features: int,
    num_samples: int = 1,
    limit: int | None = None,
) -> int:
    """Refuses a model whose kernel rendering (:func:`kernel_memory_bytes`) cannot fit.

    Args:
      config: the model.
      in_features: image channels.
      num_samples: element sets per forward (the batch size with
        ``sample_per_batch_element``).
      limit: bytes available; default :func:`available_memory`.

    Returns:
      The estimate in bytes.

    Raises:
      ValueError: the estimate exceeds ``limit``; the message names both numbers and the
        settings that drive the estimate.
    """
    need = kernel_memory_bytes(config, in_features=in_features, num_samples=num_samples)
    where = "given limit"
    if limit is None:
        limit, where = available_memory()
    if need > limit:
        raise ValueError(
            f"rendering the kernels of this model needs about {_size(need)} "
            f"(num_elements={config.num_elements}, kernel_size={config.kernel_size}, "
            f"kernel.hidden={config.kernel.hidden}, widths up to {max(block_widths(config))}, "
            f"{num_samples} element set(s) per forward), more than the {_size(limit)} of "
            f"{where}; use fewer elements, a smaller kernel or narrower layers"
        )
    return need
