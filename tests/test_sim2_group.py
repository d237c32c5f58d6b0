"""The rotation-scaling group ``sim2`` (issue 10): its settings and kernel rendering on the
enlarged grid. (The generic protocol tests run on it too.)"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pgcnn_jax as pg
from pgcnn_jax.groups import Sim2, get_group
from pgcnn_jax.nn import lifting_kernel, rendered_kernel_size

LOG2 = math.log(2.0)


# ----------------------------------------------------------------------------- the group
def test_settings_grid_and_bad_values():
    g = get_group("sim2", num_scales=3, scale_base=2.0)
    assert g == Sim2(3, 2.0) and hash(g) == hash(Sim2(3, 2)) and g.dim == 2
    assert get_group("sim2") == Sim2(2, math.sqrt(2.0))
    grid = np.asarray(g.grid(6))  # R = 2 rotations x 3 scales, slot j R + k
    want = [[0, 0], [math.pi, 0], [0, LOG2], [math.pi, LOG2], [0, 2 * LOG2], [math.pi, 2 * LOG2]]
    np.testing.assert_allclose(grid, want, atol=1e-6)
    np.testing.assert_allclose(g.matrix(jnp.array([0.0, LOG2])), 2 * np.eye(2), atol=1e-6)
    measure = g.kernel_measure(jnp.asarray(grid)[None])  # |det A|^-1 = s^-2
    np.testing.assert_allclose(measure, [[1, 1, 1 / 4, 1 / 4, 1 / 16, 1 / 16]], rtol=1e-6)
    assert g.kernel_extent(6) == 4.0
    with pytest.raises(ValueError, match="divisible by 3"):
        g.check_num_elements(4)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"num_scales must be a positive int, got {bad}"):
            get_group("sim2", num_scales=bad)
    for bad in (1.0, 0.5, float("nan"), "2"):
        with pytest.raises(ValueError, match="scale_base must be a finite number > 1"):
            get_group("sim2", scale_base=bad)
    with pytest.raises(ValueError, match="bad settings"):
        get_group("sim2", scales=2)


def test_rendered_kernel_size():
    assert rendered_kernel_size(get_group("se2"), 8, 7) == 7
    assert rendered_kernel_size(get_group("sim2", scale_base=2.0), 4, 5) == 9  # 4 * 2 + 1
    assert rendered_kernel_size(get_group("sim2"), 4, 5) == 7  # 4 sqrt(2) + 1 = 6.7
    assert rendered_kernel_size(get_group("sim2"), 4, 7) == 11  # 6 sqrt(2) + 1 = 9.5 -> 10 -> 11
    assert rendered_kernel_size(get_group("sim2", num_scales=1), 4, 7) == 7


def test_lifting_kernel_on_the_enlarged_grid():
    """Scale 1: the k x k disc kernel of SE2 in the middle of the enlarged grid (zeros around);
    scale 2: the same net on the twice larger disc ``|p| <= 2`` at ``p / 2``, times 1/4."""
    g = get_group("sim2", scale_base=2.0)
    lift = pg.nn.LiftingConv(2, 3, group=g, num_elements=2, kernel_size=5, rngs=nnx.Rngs(0))
    els = jnp.array([[[0.3, 0.0], [0.3, LOG2]]])
    w = np.asarray(lifting_kernel(lift.kernel_net, g, els, 5, 2, 3)).reshape(9, 9, 2, 2, 3)
    se2 = lifting_kernel(lift.kernel_net, get_group("se2"), jnp.array([[[0.3]]]), 5, 2, 3)
    np.testing.assert_allclose(w[2:7, 2:7, :, 0], np.asarray(se2)[0], atol=1e-6)
    assert not np.any(np.delete(np.delete(w[..., 0, :], [2, 3, 4, 5, 6], 0), [2, 3, 4, 5, 6], 1))
    pos = (np.arange(9) - 4) / 2.0
    inside = np.hypot(*np.meshgrid(pos, pos, indexing="ij")) <= 2.0
    assert inside.sum() == 49 and inside[0, 4] and not inside[1, 1]  # 81 taps, 49 on the disc
    r = np.asarray(g.inverse_matrix(els[0, 1]))
    q = np.einsum("ab,yxb->yxa", r, np.stack(np.meshgrid(pos, pos, indexing="ij"), -1))
    direct = np.asarray(lift.kernel_net(jnp.asarray(q, jnp.float32))).reshape(9, 9, 3, 2) / 4
    np.testing.assert_allclose(
        w[..., 1, :], np.where(inside[..., None, None], direct.transpose(0, 1, 3, 2), 0), atol=1e-6
    )
