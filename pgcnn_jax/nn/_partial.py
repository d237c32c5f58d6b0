"""Partial layers: the marker base of the layers that learn a distribution over their group,
their distribution parameters and how models find them."""

from __future__ import annotations

from flax import nnx

from pgcnn_jax.groups import Distribution
from pgcnn_jax.nn._variables import DistributionParam


def set_distribution(
    module: nnx.Module, distribution: Distribution, kind: type[nnx.Param] = DistributionParam
) -> None:
    """Stores every parameter of the group's ``distribution`` on ``module`` under its own name
    (a variable of type ``kind`` at its initial value) and the distribution itself as
    ``module.distribution_spec`` (static). Checkpoint paths are ``.../<module>/<name>``
    (e.g. ``blocks/0/conv1/theta``), so the names come from the group alone."""
    module.distribution_spec = distribution
    for spec in distribution:
        setattr(module, spec.name, nnx.data(kind(spec.initial_value())))


def distribution_values(module: nnx.Module) -> dict:
    """``{name: value}`` of the parameters :func:`set_distribution` stored on ``module``."""
    return {name: getattr(module, name)[...] for name in module.distribution_spec.names}


class PartialGroupLayer(nnx.Module):
    """Marker base of the layers that can learn a distribution over their group (partial
    equivariance): :func:`partial_layers` finds them with ``nnx.iter_modules``.

    A subclass has ``group``, ``num_elements``, ``sampling`` (a
    :class:`~pgcnn_jax.nn.SamplingSpec`), ``partial`` (whether this instance learns its
    distribution) and ``distribution_spec``, the group's
    :class:`~pgcnn_jax.groups.Distribution` (empty for full layers), whose parameters it
    holds as attributes of their names (:func:`set_distribution`).
    """

    @property
    def partial(self) -> bool:
        return self.sampling.partial

    @property
    def distribution_names(self) -> tuple[str, ...]:
        """Names of the layer's distribution parameters, in the group's order."""
        return self.distribution_spec.names

    def distribution(self) -> dict[str, DistributionParam]:
        """The layer's distribution parameters by name (empty for full layers)."""
        return {name: getattr(self, name) for name in self.distribution_names}


def layer_name(path) -> str:
    """The name of the layer at an ``nnx`` graph path: attribute names joined by dots, with
    ``blocks, i`` written ``block{i + 1}`` (``blocks/0/conv1`` -> ``block1.conv1``; the names
    of ``metrics.jsonl`` and ``results.json``)."""
    parts, i = [], 0
    path = tuple(path)
    while i < len(path):
        if path[i] == "blocks" and i + 1 < len(path) and isinstance(path[i + 1], int):
            parts.append(f"block{path[i + 1] + 1}")
            i += 2
        else:
            parts.append(str(path[i]))
            i += 1
    return ".".join(parts)


def partial_layers(model: nnx.Module) -> list[tuple[str, PartialGroupLayer]]:
    """``(name, layer)`` of every :class:`PartialGroupLayer` of ``model`` that learns its
    distribution, in graph order (CKResNet: ``block1.conv1, block1.conv2, ...,
    final_conv``; names by :func:`layer_name`)."""
    return [
        (layer_name(path), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, PartialGroupLayer) and module.partial
    ]
