"""The mirror group: the identity and the reflection of the columns, elements ``[0, +-1]``
(``d = 2``, the encoding of :class:`E2`)."""

from __future__ import annotations

import dataclasses

from pgcnn_jax.groups._base import ImpliedSettings, register_group
from pgcnn_jax.groups._e2 import E2


@dataclasses.dataclass(frozen=True)
class Mirror(E2):
    """Two elements, always sampled as the grid ``(0, +1), (0, -1)``; partial layers learn only
    ``mirror``."""

    name = "mirror"
    label = "Mirroring"
    fixed_num_elements = 2
    rotates = False

    def implied_settings(self) -> ImpliedSettings:
        return ImpliedSettings(num_elements=2, sampling="deterministic", sample_per_layer=False)


register_group("mirror", Mirror)
