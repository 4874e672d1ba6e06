"""``ppl-vae report DIR``: write ``DIR/report.html``, one self-contained page per run."""

from __future__ import annotations

import argparse

from ppl_vae.runs.report import write_report


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write DIR/report.html: configuration, metrics and figures of a run"
    )
    p.add_argument("run_dir", metavar="DIR", help="a run directory written by `ppl-vae train`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(write_report(args.run_dir))
    return 0
