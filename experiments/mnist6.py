"""MNIST6-180 / MNIST6-M runs (Table 1, Figure 4).

    python -m experiments.mnist6 --task=180                        # row 1: SE2 partial
    python -m experiments.mnist6 --task=180 --nopartial            # row 2
    python -m experiments.mnist6 --task=m --group=mirror           # Mirroring group
    python -m experiments.mnist6 --preset=fig4

See ``experiments/_cli.py`` for the shared flags and ``experiments/configs.py`` for presets.
"""

from absl import app, flags

from experiments import _cli

flags.adopt_module_key_flags(_cli)  # --help lists the shared flags too

DATASETS = ("mnist6_180", "mnist6_m")
_TASK = flags.DEFINE_string("task", "180", "180 (MNIST6-180) or m (MNIST6-M).")
_ROT = flags.DEFINE_float("rot_interval", None, "Degrees of random rotation of the sixes (180).")


@_cli.guarded
def main(argv):
    dataset = None
    if flags.FLAGS["task"].present:
        if _TASK.value not in ("180", "m"):
            raise ValueError(f"unknown task {_TASK.value!r}; expected 180 or m")
        dataset = f"mnist6_{_TASK.value}"
    extra = {} if _ROT.value is None else {"rot_interval": _ROT.value}
    _cli.run(DATASETS, dataset, **extra)


if __name__ == "__main__":
    app.run(main)
