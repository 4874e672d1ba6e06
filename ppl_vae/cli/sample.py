"""``ppl-vae sample DIR -n N --out FILE.png [--sampler prior|gmm|maf]``: decode codes drawn
from the prior of a trained run, or from a density fitted to its training codes (the job:
:mod:`ppl_vae.runs.sample`)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained model")
    p.add_argument("run_dir", help="a run directory written by `ppl-vae train --out`")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument(
        "--sampler",
        default="prior",
        help="where the codes come from: prior (the model's own), gmm (a Gaussian mixture "
        "fitted to the training set's codes) or maf (a masked autoregressive flow fitted to "
        "them); a fitted one is saved in the run under samplers/ and reused",
    )
    p.add_argument("--components", type=int, default=10, help="gmm: mixture components")
    p.add_argument(
        "--covariance", default="full", help="gmm: full, diag, tied or spherical covariances"
    )
    p.add_argument("--refit", action="store_true", help="fit the sampler again, replacing it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs.sample import sample_run  # heavy: imported only to run

    out, info = sample_run(
        args.run_dir,
        args.n,
        args.out,
        args.seed,
        args.device,
        args.trust,
        sampler=args.sampler,
        components=args.components,
        covariance=args.covariance,
        refit=args.refit,
    )
    print(f"wrote {args.n} samples to {out} (sampler: {info['sampler']})")
    if info["record"] is not None:
        done = "fitted to the training codes and saved" if info["fitted"] else "reused"
        print(f"sampler {done}: {info['record']}")
    if info["test_code_log_density"] is not None:
        print(f"test codes: mean log-density {info['test_code_log_density']:.3f} nats")
    return 0
