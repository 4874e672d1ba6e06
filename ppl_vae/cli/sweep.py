"""``ppl-vae sweep beta --values 0.25,1,4,16 --out DIR``: one VAE per beta, and the
rate--distortion table and figures (see :mod:`ppl_vae.runs.sweep`).

Example::

    ppl-vae sweep beta --values 0.25,1,4,16 --epochs 30 --latent-dim 8 --out runs/beta
"""

from __future__ import annotations

import argparse

from ppl_vae.cli import common


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train one model per beta; rate-distortion table and plots")
    p.add_argument("parameter", choices=["beta"], help="what to sweep (beta: the KL weight)")
    p.add_argument("--values", required=True, help="comma-separated betas, e.g. 0.25,1,4,16")
    p.add_argument("--model", default="vae", help="a model with a latent prior (default vae)")
    p.add_argument(
        "--capacities",
        help="also train the capacity objective once per target C in nats, e.g. 5,10",
    )
    common.add_data_args(p)
    common.add_model_args(p)
    common.add_train_args(p)
    p.add_argument("--out", required=True, help="folder for the runs (DIR/beta-<value>) and table")
    p.add_argument("--overwrite", action="store_true", help="replace existing runs in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs import sweep  # heavy: imported only to run

    values = sweep.parse_values(args.values)
    base = common.run_config(args, args.model)
    capacities = sweep.parse_capacities(args.capacities)
    rows = sweep.sweep_beta(
        base, values, args.out, args.overwrite, log=print, capacities=capacities
    )
    print(f"wrote {len(rows)} runs, sweep.csv, sweep.md and figures to {args.out}")
    return 0
