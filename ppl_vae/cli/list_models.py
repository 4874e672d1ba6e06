"""``ppl-vae models``: the suite, one line each."""

from __future__ import annotations

import argparse
import sys

from ppl_vae import registry
from ppl_vae.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("models", help="list the models of the suite")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = registry.names()
    width = max(map(len, names))
    for name in names:
        try:
            line = registry.summary(name)
        except UserError as exc:  # a broken plug-in: one warning line, the rest still listed
            print(f"warning: {exc}", file=sys.stderr)
            continue
        print(f"{name:<{width}}  {line}")
    return 0
