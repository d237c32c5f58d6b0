"""One joint group conv's shape, timed in every formulation we know of, side by side.

    python scripts/conv_compare.py --batch=8 --size=32 --channels=256 --kernel=7 \\
        [--torch_python=/path/to/venv-with-torch/bin/python]

The CIFAR-10 CKResNet SE2-8 group conv is ``[8, 32, 32, 256] x [7, 7, 256, 256]`` (width 32,
N = 8). For each formulation it times the forward and the forward + backward (both
gradients) of ``sum(sin(conv(x, w)))`` (median of ``--steps`` after one warm-up), in a fresh
interpreter per XLA flag setting:

* ``xla``: one ``lax.conv_general_dilated`` (XLA:CPU's Eigen convolution);
* ``xla+onednn``: the same with ``XLA_FLAGS=--xla_cpu_use_onednn=true``;
* ``rows``: ``k`` convs of ``1 x k`` kernels over row-shifted inputs, summed;
* ``patches``: ``lax.conv_general_dilated_patches`` then one matmul per kernel row;
* ``torch``: ``torch.nn.functional.conv2d`` (oneDNN) in ``--torch_python``, when given.

Prints one line per formulation with milliseconds and GFLOP/s of the real multiply-adds
(``2 B H W k^2 C_in C_out`` forward, 3x that forward + backward).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_JAX = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp
b, s, c, k, steps, kind = json.loads(sys.argv[1])
x = jax.random.normal(jax.random.key(0), (b, s, s, c))
w = jax.random.normal(jax.random.key(1), (k, k, c, c)) * 0.01
dims = ("NHWC", "HWIO", "NHWC")
p = k // 2

def xla(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)

def rows(x, w):
    xp = jnp.pad(x, ((0, 0), (p, p), (0, 0), (0, 0)))
    y = None
    for i in range(k):
        t = jax.lax.conv_general_dilated(xp[:, i:i + s], w[i:i + 1], (1, 1), ((0, 0), (p, p)),
                                         dimension_numbers=dims)
        y = t if y is None else y + t
    return y

def patches(x, w):
    y = None
    xp = jnp.pad(x, ((0, 0), (p, p), (0, 0), (0, 0)))
    for i in range(k):
        pt = jax.lax.conv_general_dilated_patches(xp[:, i:i + s], (1, k), (1, 1), ((0, 0), (p, p)),
                                                  dimension_numbers=dims)  # [b, s, s, c k]
        wi = w[i].transpose(1, 0, 2).reshape(c * k, c)  # patches order: (channel, tap)
        t = jnp.einsum("bhwf,fo->bhwo", pt, wi)
        y = t if y is None else y + t
    return y

f = {"xla": xla, "rows": rows, "patches": patches}[kind]
fwd = jax.jit(f)
both = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1)))
ref = jax.jit(xla)(x, w)
err = float(jnp.max(jnp.abs(fwd(x, w) - ref)) / jnp.max(jnp.abs(ref)))
out = {}
for name, g in (("fwd", fwd), ("fwd_bwd", both)):
    jax.block_until_ready(g(x, w))
    ts = []
    for _ in range(steps):
        t = time.perf_counter(); jax.block_until_ready(g(x, w)); ts.append(time.perf_counter() - t)
    out[name] = statistics.median(ts)
out["rel_err_vs_xla"] = err
print(json.dumps(out))
"""

_TORCH = r"""
import json, statistics, sys, time
import torch
b, s, c, k, steps = json.loads(sys.argv[1])
x = torch.randn(b, c, s, s, requires_grad=True)
w = (torch.randn(c, c, k, k) * 0.01).requires_grad_(True)
def fwd():
    with torch.no_grad():
        return torch.nn.functional.conv2d(x, w, padding=k // 2)
def both():
    y = torch.nn.functional.conv2d(x, w, padding=k // 2)
    torch.sin(y).sum().backward()
out = {}
for name, g in (("fwd", fwd), ("fwd_bwd", both)):
    g()
    ts = []
    for _ in range(steps):
        t = time.perf_counter(); g(); ts.append(time.perf_counter() - t)
    out[name] = statistics.median(ts)
out["torch"] = torch.__version__
out["threads"] = torch.get_num_threads()
print(json.dumps(out))
"""


def _run(python: str, code: str, args: list, env: dict | None = None) -> dict:
    res = subprocess.run(
        [python, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        env=None if env is None else os.environ | env,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{python} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _line(label: str, r: dict, macs: int, tail: str) -> str:
    fwd, both = r["fwd"], r["fwd_bwd"]
    return (
        f"{label:11s} fwd {1e3 * fwd:8.1f} ms ({2 * macs / fwd / 1e9:6.1f} GFLOP/s)  "
        f"fwd+bwd {1e3 * both:8.1f} ms ({6 * macs / both / 1e9:6.1f} GFLOP/s)  {tail}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--kernel", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--torch_python", default=None)
    ap.add_argument("--json", default=None, help="Also write the results here.")
    a = ap.parse_args(argv)
    for name in ("batch", "size", "channels", "kernel", "steps"):
        if getattr(a, name) < 1:
            raise SystemExit(f"error: --{name} must be >= 1, got {getattr(a, name)}")
    if a.kernel % 2 == 0:
        raise SystemExit(f"error: --kernel must be odd, got {a.kernel}")
    macs = a.batch * a.size * a.size * a.kernel**2 * a.channels**2
    shape = [a.batch, a.size, a.channels, a.kernel, a.steps]
    runs = [
        ("xla", "xla", {}),
        ("xla+onednn", "xla", {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}),
        ("rows", "rows", {}),
        ("patches", "patches", {}),
    ]
    results = {}
    k, c = a.kernel, a.channels
    print(f"# conv [{a.batch}, {a.size}, {a.size}, {c}] x [{k}, {k}, {c}, {c}], "
          f"{macs / 1e9:.2f} GMAC forward")  # fmt: skip
    for label, kind, env in runs:
        r = _run(sys.executable, _JAX, [*shape, kind], env)
        results[label] = r
        print(_line(label, r, macs, f"rel. err. vs xla {r['rel_err_vs_xla']:.1e}"), flush=True)
    if a.torch_python:
        r = _run(a.torch_python, _TORCH, shape)
        results["torch"] = r
        print(_line("torch", r, macs, f"torch {r['torch']}, {r['threads']} threads"), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shape": shape, "macs": macs, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
