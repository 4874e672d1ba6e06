"""``ppl-vae``: the command line. Each subcommand is one module of this package with a
``register(subparsers)`` function; :func:`main` turns a :class:`~ppl_vae.errors.UserError`
into one line on stderr and exit status 2, and so does a usage mistake (argparse's own
errors are one ``error:`` line too). A closed pipe (``ppl-vae models | head``) ends the
command quietly."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from ppl_vae.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <what>; see `<prog> --help```, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="ppl-vae", description="Generative autoencoders written as Pyro programs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        command = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(command, "register"):
            command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`ppl-vae models | head`): stop quietly. Point stdout at
        # /dev/null so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended
