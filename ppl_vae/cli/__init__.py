"""``ppl-vae``: the command line. Each subcommand is one module of this package with a
``register(subparsers)`` function; :func:`main` runs it under
:func:`~ppl_vae.errors.one_error_line`, which turns a :class:`~ppl_vae.errors.UserError`
(or any other failure, a full stdout included) into one line on stderr and exit status 2,
and so does a usage mistake (argparse's own errors are one ``error:`` line too). A closed
pipe (``ppl-vae models | head``) ends the command quietly."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from ppl_vae.errors import one_error_line


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <what>; see `<prog> --help```, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")

    def _print_message(self, message: str, file=None) -> None:
        """argparse drops a failed write silently; help that cannot reach stdout (a full
        device) fails as the one ``error:`` line instead."""
        if message and (file is None or file is sys.stderr):
            super()._print_message(message, file)
        elif message:
            file.write(message)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="ppl-vae", description="Generative autoencoders written as Pyro programs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        command = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(command, "register"):
            command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; any failure is the one ``error:`` line of
    :func:`~ppl_vae.errors.one_error_line` and its exit status."""
    with one_error_line() as status:
        status.code = _run(argv)
    return status.code


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    return int(args.func(args) or 0)
