"""Recording the outputs of every lifting / group conv of a model during one forward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flax import nnx

from pgcnn_jax.nn import GroupConv, GroupFeatures, LiftingConv


def conv_layers(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    """``(name, layer)`` of every :class:`LiftingConv` and :class:`GroupConv` of ``model`` in
    graph order. Group convs are named as the model's ``group_convs()`` names them (the names
    of ``metrics.jsonl`` / ``results.json``, e.g. ``block1.conv1``) when it has that method;
    other layers by their attribute path (e.g. ``lift``)."""
    given = {}
    if callable(getattr(model, "group_convs", None)):
        given = {id(m): n for n, m in model.group_convs()}
    layers = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, LiftingConv | GroupConv):
            name = given.get(id(module), ".".join(str(p) for p in path))
            layers.append((name, module))
    return layers


@contextlib.contextmanager
def record_features(model: nnx.Module) -> Iterator[dict[str, GroupFeatures]]:
    """Context in which each forward of ``model`` stores every conv output by layer name.

    Works eagerly (not under ``jit``): the conv classes' ``__call__`` is wrapped for the
    duration of the context and restored afterwards.

    >>> # with record_features(model) as feats: model(x, rngs=rngs); feats["block1.conv1"]
    """
    names = {id(m): n for n, m in conv_layers(model)}
    store: dict[str, GroupFeatures] = {}
    originals = {cls: cls.__call__ for cls in (LiftingConv, GroupConv)}

    def wrap(cls):
        original = originals[cls]

        def call(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            if id(self) in names:
                store[names[id(self)]] = out
            return out

        return call

    try:
        for cls in originals:
            cls.__call__ = wrap(cls)
        yield store
    finally:
        for cls, original in originals.items():
            cls.__call__ = original
