"""``ppl-vae models``: the suite, one line each."""

from __future__ import annotations

import argparse

from ppl_vae import registry


def register(sub) -> None:
    p = sub.add_parser("models", help="list the models of the suite")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = registry.names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {registry.summary(name)}")
    return 0
