"""``ppl-vae sample DIR -n N --out FILE.png``: decode draws from the prior of a trained run
(the job: :mod:`ppl_vae.runs.sample`)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained model's prior")
    p.add_argument("run_dir", help="a run directory written by `ppl-vae train --out`")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs.sample import sample_run  # heavy: imported only to run

    out = sample_run(args.run_dir, args.n, args.out, args.seed, args.device, args.trust)
    print(f"wrote {args.n} samples to {out}")
    return 0
