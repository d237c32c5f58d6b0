"""Recording the outputs of every lifting / group conv of a model during one forward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from flax import nnx

from pgcnn_jax.nn import GroupConv, GroupFeatures, LiftingConv, layer_name


def conv_layers(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    """``(name, layer)`` of every :class:`LiftingConv` and :class:`GroupConv` of ``model`` in
    graph order, named by :func:`pgcnn_jax.nn.layer_name` (the names of ``metrics.jsonl`` /
    ``results.json``, e.g. ``block1.conv1``; ``lift``)."""
    return [
        (layer_name(path), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, LiftingConv | GroupConv)
    ]


class _Sown(Mapping):
    """Layer name -> last sown output, a live view of the shared ``Intermediate`` capture, in
    the order the layers were first applied. Every conv sows ``{name: output}`` under the one
    key ``"features"``, so :meth:`nnx.Module.sow` accumulates them in a tuple in call order
    (the keys of a dict state would come back sorted from any tree map)."""

    def __init__(self, sown: nnx.Intermediate):
        self._sown = sown

    def _outputs(self) -> dict[str, GroupFeatures]:
        outputs: dict[str, GroupFeatures] = {}
        for entry in self._sown.get_value().get("features", ()):
            outputs.update(entry)
        return outputs

    def __getitem__(self, name: str) -> GroupFeatures:
        return self._outputs()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs())

    def __len__(self) -> int:
        return len(self._outputs())


@contextlib.contextmanager
def record_features(model: nnx.Module) -> Iterator[Mapping[str, GroupFeatures]]:
    """Context in which each forward of ``model`` stores every conv output by layer name, in
    the order the layers are applied (a layer applied twice keeps its last output).

    Uses NNX's own sowing (``Module.sow`` into an :class:`nnx.Intermediate` capture, the
    mechanism of :func:`nnx.capture`): on entry each conv layer gets its name as
    ``record_as`` and one shared ``Intermediate`` capture, so its ``__call__`` sows
    ``{name: output}``; on exit both are removed again, leaving the model's graph and state as
    they were. Outside the context the layers sow nothing (no change of graph structure, no
    retracing). Works eagerly and inside traced functions (``jax.eval_shape``, ``jax.jit``
    of a merged model). The yielded mapping reads the sown values: it fills as the forward
    runs and keeps them after the context.

    >>> # with record_features(model) as feats: model(x, rngs=rngs); feats["block1.conv1"]
    """
    layers = conv_layers(model)
    for name, layer in layers:
        if hasattr(layer, "record_as") or hasattr(layer, "__captures__"):
            raise ValueError(
                f"record_features: layer {name!r} is already recording (nested record_features "
                "or nnx.capture on the same model)"
            )
    sown = nnx.Intermediate({})
    try:
        for name, layer in layers:
            layer.record_as = name
            layer.__captures__ = nnx.data((sown,))
        yield _Sown(sown)
    finally:
        for _, layer in layers:
            for attr in ("record_as", "__captures__"):
                if hasattr(layer, attr):
                    delattr(layer, attr)
