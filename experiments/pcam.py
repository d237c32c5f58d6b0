"""PatchCamelyon runs (not in the paper; CIFAR-10 CKResNet settings, 30 epochs).

    python -m experiments.pcam --group=se2 --elems=8
    python -m experiments.pcam --preset=pcam-t2

See ``experiments/_cli.py`` for the shared flags and ``experiments/configs.py`` for presets.
"""

from absl import app, flags

from experiments import _cli

flags.adopt_module_key_flags(_cli)  # --help lists the shared flags too


@_cli.guarded
def main(argv):
    _cli.run(("pcam",))


if __name__ == "__main__":
    app.run(main)
