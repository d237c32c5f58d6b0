"""MNIST-scale runs (not in the paper; SESN's benchmark, Sosnovik et al., ICLR 2020).

    python -m experiments.mnist_scale                                  # SE(2) partial, N = 8
    python -m experiments.mnist_scale --preset=mnist_scale-t2          # the T(2) CNN
    python -m experiments.mnist_scale --group=se2 --nopartial
    python -m experiments.mnist_scale --preset=mnist_scale-sim2-partial --elems=16
    python -m experiments.mnist_scale --data=npz:data/mnist5k.npz      # plain MNIST, offline

The data are derived from plain MNIST on the fly (TFDS ``mnist`` or ``--data=npz:PATH``
holding plain MNIST): train and test pooled, 10 000 / 2 000 / 50 000 digits drawn per
``--seed`` (fewer, in proportion, from a smaller npz; the first line printed gives the
sizes), each shrunk about the centre by its own factor from U[0.3, 1) and zero-padded to
28x28 (``pgcnn_jax.data.derive_mnist_scale``). The ``sim2`` presets need the group ``sim2``.

See ``experiments/_cli.py`` for the shared flags and ``experiments/configs.py`` for presets.
"""

from absl import app, flags

from experiments import _cli

flags.adopt_module_key_flags(_cli)  # --help lists the shared flags too


@_cli.guarded
def main(argv):
    _cli.run(("mnist_scale",))


if __name__ == "__main__":
    app.run(main)
