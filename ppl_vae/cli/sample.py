"""``ppl-vae sample DIR -n N --out FILE.png``: decode draws from the prior of a trained run."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ppl_vae import plots, traces
from ppl_vae.errors import UserError
from ppl_vae.run import load_run, placeholder


def register(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained model's prior")
    p.add_argument("run_dir", help="a run directory written by `ppl-vae train --out`")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError("-n must be at least 1")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    pair, ds, _ = load_run(args.run_dir, args.device)
    if ds.image_shape is None:
        raise UserError(f"{args.run_dir} was trained on non-image data; samples have no picture")
    torch.manual_seed(args.seed)
    x = traces.generate(pair, placeholder(pair, ds, args.n))
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.image_grid(x, ds.image_shape, out, nrow=max(1, math.isqrt(args.n)))
    print(f"wrote {args.n} samples to {out}")
    return 0
