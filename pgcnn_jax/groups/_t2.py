"""T(2)'s stabiliser: the trivial group (translations only, by the convolution), one element
``[0]`` (``d = 1``, the encoding of :class:`SE2`)."""

from __future__ import annotations

import dataclasses

from pgcnn_jax.groups._base import ImpliedSettings, register_group
from pgcnn_jax.groups._se2 import SE2


@dataclasses.dataclass(frozen=True)
class T2(SE2):
    """The trivial group: exactly one element, nothing to sample or learn (a plain CNN)."""

    name = "t2"
    label = "T(2)"
    fixed_num_elements = 1
    rotates = False
    trivial = True

    def implied_settings(self) -> ImpliedSettings:
        return ImpliedSettings(
            num_elements=1, sampling="deterministic", partial=False, sample_per_layer=False
        )

    def check_partial(self, num_elements: int, sampling: str) -> None:
        raise ValueError("group 't2' has a single element: partial=True is meaningless")

    def exact_elements(self) -> list[tuple[float, ...]]:
        return []


register_group("t2", T2)
