"""Separable kernel factors at initialisation against the joint net (issue 14 item 1).

    python scripts/separable_init.py --npz=data/mnist5k.npz --seeds=12 --keys=16 --images=64

Prints, per kernel net, the angle roughness ``rms(dpsi/da) / rms(psi)`` of the joint net and
of ``psi_G`` with ``factor_init="plain"`` and ``"matched"`` (mean over ``--seeds`` inits;
:func:`pgcnn_jax.analysis.angle_roughness`), then the Figure-4 model's sampling-noise ratio
(variance of the logit difference across ``--keys`` sampling keys over its variance across
``--images`` sixes and nines of the npz's training split, eval mode, theta at its initial 1;
:func:`pgcnn_jax.analysis.sampling_noise_ratio`): median and geometric mean over the seeds,
for the joint model and the separable one with either init.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.configs import get_preset
from pgcnn_jax.analysis import angle_roughness, sampling_noise_ratio
from pgcnn_jax.data import get_spec
from pgcnn_jax.kernels import FACTOR_INITS, KernelSpec
from pgcnn_jax.models import build_model


def _digits(path: str, count: int) -> jax.Array:
    with np.load(path) as d:
        x, y = d["x_train"], d["y_train"]
    idx = np.where((y == 6) | (y == 9))[0][:count]
    if len(idx) < 2:
        raise SystemExit(f"error: {path} holds fewer than 2 sixes and nines")
    images = np.asarray(x[idx], np.float32)[..., None] / 255.0
    spec = get_spec("mnist6_180")
    return jnp.asarray((images - np.asarray(spec.mean)) / np.asarray(spec.std))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", default="data/mnist5k.npz")
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--keys", type=int, default=16)
    ap.add_argument("--images", type=int, default=64)
    a = ap.parse_args(argv)
    for name in ("seeds", "keys", "images"):
        if getattr(a, name) < 2:
            raise SystemExit(f"error: --{name} must be >= 2, got {getattr(a, name)}")
    print("# angle roughness rms(dpsi/da) / rms(psi), mean over seeds")
    for net in ("siren", "fourier", "gabor", "magnet"):
        row = {"joint": []} | {f: [] for f in FACTOR_INITS}
        for seed in range(a.seeds):
            joint = KernelSpec(net).make_group_net(1, 4, 4, rngs=nnx.Rngs(seed))
            row["joint"].append(angle_roughness(joint, spatial_inputs=True))
            for init in FACTOR_INITS:
                spec = KernelSpec(net, render="separable", factor_init=init)
                sep = spec.make_group_net(1, 4, 4, rngs=nnx.Rngs(seed))
                row[init].append(angle_roughness(sep.group, spatial_inputs=False))
        print(net, " ".join(f"{k}={np.mean(v):.2f}" for k, v in row.items()), flush=True)
    images = _digits(a.npz, a.images)
    keys = jax.random.split(jax.random.key(0), a.keys)
    model = get_preset("fig4").model
    print(f"# Figure-4 model sampling-noise ratio ({len(images)} digits, {a.keys} keys)")
    variants = {"joint": model} | {
        f"separable {init}": model.replace(separable=True, separable_init=init)
        for init in FACTOR_INITS
    }
    for label, config in variants.items():
        ratios = [
            sampling_noise_ratio(
                build_model(config, num_classes=2, in_features=1, rngs=nnx.Rngs(seed)),
                images,
                keys,
            )
            for seed in range(a.seeds)
        ]
        print(f"{label}: median {np.median(ratios):.1f} geometric mean "
              f"{np.exp(np.mean(np.log(ratios))):.1f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
