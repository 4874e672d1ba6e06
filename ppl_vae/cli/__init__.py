"""``ppl-vae``: the command line. Each subcommand is one module of this package with a
``register(subparsers)`` function; :func:`main` turns a :class:`~ppl_vae.errors.UserError`
into one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from ppl_vae.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ppl-vae", description="Generative autoencoders written as Pyro programs."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        command = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(command, "register"):
            command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
