"""CIFAR-10 / CIFAR-100 runs (Tables 2-5).

    python -m experiments.cifar --group=se2 --elems=16            # row 17 with N = 16
    python -m experiments.cifar --preset=cifar10-se2-partial --elems=8
    python -m experiments.cifar --dataset=cifar100 --group=e2 --nopartial
    python -m experiments.cifar --model=gcnn --group=se2 --elems=4

See ``experiments/_cli.py`` for the shared flags and ``experiments/configs.py`` for presets.
"""

from absl import app, flags

from experiments import _cli

flags.adopt_module_key_flags(_cli)  # --help lists the shared flags too

DATASETS = ("cifar10", "cifar100")
_DATASET = flags.DEFINE_string("dataset", "cifar10", "cifar10 or cifar100.")
_AUGMENT = flags.DEFINE_bool("augment", False, "Random crop + flip (no paper run uses it).")


@_cli.guarded
def main(argv):
    extra = {"augment": _AUGMENT.value} if flags.FLAGS["augment"].present else {}
    dataset = _DATASET.value if flags.FLAGS["dataset"].present else None
    _cli.run(DATASETS, dataset, **extra)


if __name__ == "__main__":
    app.run(main)
