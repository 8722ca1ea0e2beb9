"""``key=value`` command-line arguments (Hydra-style, without Hydra) for the small data tools."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

from faig_lightning import __version__
from faig_lightning.cli import USER_ERROR_EXIT, quiet_broken_pipe, report_user_error
from faig_lightning.errors import FaigError

REQUIRED = object()
"""Default marking an argument that must be given (parsed as a string)."""


def usage_text(prog: str, defaults: Mapping[str, object]) -> str:
    """One usage line listing every key with its default (``<required>`` for required ones)."""
    parts = [f"{k}=<required>" if v is REQUIRED else f"{k}={v}" for k, v in defaults.items()]
    return f"usage: python -m {prog} " + " ".join(parts)


def parse_key_values(argv: Sequence[str], defaults: Mapping[str, object], prog: str) -> dict[str, object]:
    """Parse ``key=value`` tokens; each value takes the type of its default (int, float or str)."""
    values = dict(defaults)
    for token in argv:
        key, sep, raw = token.partition("=")
        if not sep or key not in defaults:
            raise FaigError(
                f"unexpected argument '{token}'; expected key=value with keys {list(defaults)}.\n"
                + usage_text(prog, defaults)
            )
        kind = type(defaults[key])
        try:
            values[key] = kind(raw) if kind in (int, float) else raw
        except ValueError as err:
            raise FaigError(f"{key}={raw!r} is not a valid {kind.__name__}; e.g. {key}={defaults[key]}") from err
    missing = [k for k, v in values.items() if v is REQUIRED]
    if missing:
        raise FaigError(f"missing required argument(s) {missing}.\n" + usage_text(prog, defaults))
    return values


def run_cli(
    name: str, prog: str, doc: str, defaults: Mapping[str, object], run: Callable[..., object],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), call ``run(**values)``; a FaigError is one line
    ``<name>: error: …`` (``name``: the console script) and exit code 2; ``--version`` prints ``<name> <version>``;
    a closed stdout ends quietly."""
    args = sys.argv[1:] if argv is None else list(argv)
    with quiet_broken_pipe():
        if {"-h", "--help"} & set(args):
            print(doc.strip() + "\n\n" + usage_text(prog, defaults))
            return 0
        if "--version" in args:
            print(f"{name} {__version__}")
            return 0
        try:
            run(**parse_key_values(args, defaults, prog))
        except FaigError as err:
            report_user_error(name, err)
            return USER_ERROR_EXIT
    return 0
