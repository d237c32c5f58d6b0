"""The command-line plumbing of the CLIs that parse a private ``absl.flags.FlagValues``
(``tables``, ``figures``, ``bench``): help, parsing and the one-line error."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags

__all__ = ["HELP_ARGS", "parse_or_help", "parse_set", "print_error"]

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


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set`` values ``["KEY=JSON", ...]`` -> overrides (JSON lists become tuples; a value
    that is not JSON stays a string); ``ValueError`` for an item without ``KEY=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out
