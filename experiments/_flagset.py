"""The command-line plumbing of the CLIs that parse a private ``absl.flags.FlagValues``
(``tables``, ``figures``, ``bench``): help, parsing and the one-line error."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

__all__ = ["HELP_ARGS", "print_error", "parse_or_help"]

HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")


def parse_or_help(fv: flags.FlagValues, argv: Sequence[str], doc: str | None) -> bool:
    """Parses ``argv`` into ``fv``; returns ``False`` after printing ``doc`` and the flags'
    help when ``argv`` asks for help (nothing parsed). Raises ``ValueError`` for positional
    arguments and ``flags.Error`` for bad flags."""
    if any(a in HELP_ARGS for a in argv[1:]):
        print(doc)
        print(fv.get_help())
        return False
    rest = fv(list(argv))
    if len(rest) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(rest[1:])}")
    return True


def print_error(err: BaseException) -> None:
    """``error: <message on one line>`` on stderr."""
    print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
