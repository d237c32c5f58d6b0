"""RotMNIST runs (Tables 2-5).

    python -m experiments.rotmnist --group=se2 --elems=8          # row 6 (monotonic loss)
    python -m experiments.rotmnist --group=e2 --nopartial
    python -m experiments.rotmnist --preset=rotmnist-gcnn-se2-partial

See ``experiments/_cli.py`` for the shared flags and ``experiments/configs.py`` for presets.
"""

from absl import app, flags

from experiments import _cli

flags.adopt_module_key_flags(_cli)  # --help lists the shared flags too


@_cli.guarded
def main(argv):
    _cli.run(("rotmnist",))


if __name__ == "__main__":
    app.run(main)
