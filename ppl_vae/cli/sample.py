"""``ppl-vae sample DIR -n N --out FILE.png``: decode draws from the prior of a trained run."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ppl_vae import validate
from ppl_vae.errors import UserError


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
    import torch  # heavy: imported only to run

    from ppl_vae import traces
    from ppl_vae.figures.run_figures import placeholder
    from ppl_vae.runs import atomic
    from ppl_vae.runs.build import load_run

    n = validate.sample_count(args.n)
    validate.seed(args.seed)
    validate.device(args.device)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a .png file, e.g. {out / 'samples.png'}")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise UserError(f"--out {out} is not a regular file; name a new .png file")
    folder = next((p for p in out.parents if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {folder}; choose another --out")
    pair, ds, _ = load_run(args.run_dir, args.device, args.trust)
    if ds.image_shape is None:
        raise UserError(
            f"{args.run_dir} was trained on non-image data; samples have no picture (an .npz "
            "of images holds x_train and x_test as (N, H, W) arrays, not (N, D) rows)"
        )
    if not pair.x_shaped:
        raise UserError(
            f"{args.run_dir}'s model scores something other than x (its observed sites are "
            f"{', '.join(pair.observed_sites)}); its samples are not images of the data"
        )
    torch.manual_seed(args.seed)
    x = traces.generate(pair, placeholder(pair, ds, n))
    out.parent.mkdir(parents=True, exist_ok=True)
    from ppl_vae.figures import images as plots

    with atomic.writing(out) as tmp:  # a reader never sees half a PNG
        plots.image_grid(x, ds.image_shape, tmp, nrow=max(1, math.isqrt(n)))
    print(f"wrote {n} samples to {out}")
    return 0
