"""Test a trained run's checkpoint again, e.g. with K per-example samples.

    python -m experiments.evaluate --run=runs/fig4 --eval_samples=16
    python -m experiments.evaluate --run=runs/fig4 --eval_samples=1 --which=latest

Prints one JSON line (``test_accuracy`` of the mean softmax of K passes, ``test_accuracies``
of each single pass, ``eval_samples``, ``test_examples``) and, with ``--out``, writes it to a
file. The test key is the trainer's, so the run's own K reproduces its ``results.json``.
``--data`` / ``--data_dir`` (the shared flags) point at moved data.
"""

import json

from absl import app, flags, logging

from experiments import _cli
from pgcnn_jax.train import CHECKPOINT_KINDS, evaluate_run
from pgcnn_jax.train._metrics import write_json

flags.adopt_module_key_flags(_cli)

_RUN = flags.DEFINE_string("run", None, "Run directory (a --workdir of a training CLI).")
_WHICH = flags.DEFINE_enum("which", "best", CHECKPOINT_KINDS, "Checkpoint to test.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON result to this file.")


@_cli.guarded
def main(argv):
    if not _RUN.value:
        raise ValueError("--run=DIR is required (the run directory to test)")
    fl = flags.FLAGS
    if not fl["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    result = evaluate_run(
        _RUN.value,
        eval_samples=fl.eval_samples,
        which=_WHICH.value,
        data=fl.data,
        data_dir=fl.data_dir,
    )
    if _OUT.value:
        write_json(_OUT.value, result)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
