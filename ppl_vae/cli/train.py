"""``ppl-vae train MODEL``: fit one model and write its run directory."""

from __future__ import annotations

import argparse
import sys

from ppl_vae.cli import common
from ppl_vae.runs.report import REPORT


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and write a run directory")
    p.add_argument("model", help="a name from `ppl-vae models`, or a path to your own .py file")
    common.add_data_args(p)
    common.add_model_args(p)
    common.add_train_args(p)
    common.add_monitor_args(p)
    p.add_argument("--out", help="run directory for config, checkpoints, metrics, figures")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (only files ppl-vae wrote there; anything else is refused)",
    )
    p.add_argument(
        "--trust", action="store_true", help="--resume: run the run's model.py though untrusted"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs.train import train_run  # heavy: imported only to run

    job = train_run(
        common.run_config(args, args.model),
        args.out,
        args.resume,
        args.overwrite,
        args.trust,
        tensorboard=args.tensorboard,
    )
    m = job.metrics
    first = m["history"][0]["test_elbo"] if m["history"] else float("nan")
    mse = m["test_recon_mse"]
    mse = f"test recon MSE {mse:.3f}" if mse is not None else "no recon MSE (y is not x-shaped)"
    print(
        f"{args.model}: test ELBO {m['test_elbo']:.3f} nats (epoch 1: {first:.3f}), "
        f"train ELBO {m['train_elbo']:.3f}, {mse}, "
        f"{m['epochs']} epochs in {m['seconds']:.1f}s"
    )
    for warning in m.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if m.get("jit", "").startswith("eager: "):  # slower, same results: say why
        print(
            f"note: the loss ran eagerly, not traced: {m['jit'][len('eager: ') :]}", file=sys.stderr
        )
    if m.get("compile", "").startswith("fallback: "):  # asked for, not used: say why
        note = m["compile"][len("fallback: ") :]
        print(f"note: the loss was not compiled: {note}", file=sys.stderr)
    if job.out is not None:
        print(f"run directory: {job.out}")
        print(f"report: {job.out / REPORT}")  # keep last: `make demo` ends with this path
    return 0
