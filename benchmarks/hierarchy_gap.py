"""The issue's bar: the suite's best program against its plain VAE on mnist-5k at one budget.

"The suite's best program is at least 3.6 nats above its plain VAE on mnist-5k at an equal
budget (IW log p(x), K=1000)" -- the literature's VAE -> hierarchical-VampPrior gap
(Tomczak & Welling 2018, Table 2: -84.75 -> -81.24 nats with MLPs on MNIST, the full 60k
training digits and thousands of epochs).

Every arm is trained through the library (``ppl_vae.runs.train.train_run``, what ``ppl-vae
train`` runs) with the *same* training options -- epochs, batch size, Adam and its learning
rate, seed, the ELBO, an optional KL warm-up -- every option written out, so no model's
``train_defaults`` apply; on mnist-5k (4000 training / 1000 test digits), dynamically
binarised (a fresh Bernoulli draw of the training images every epoch; the test set is the
suite's one fixed draw), as ``benchmarks/vs_pythae.py`` does. The networks are one MLP
width for all arms (``--hidden``): the VAE has ``--latent-dim`` latents, the two-level
models ``--latent-dim`` next to the data and ``--top-dim`` above. Each trained pair is
scored by the same evaluator, the importance-weighted estimate of log p(x) with K samples
(:func:`ppl_vae.measure.importance.iw_log_likelihood`, the same seed for every arm), on
the test digits; the table gives each arm's mean and standard error and its paired
difference from the first arm (the baseline, ``vae``) with the paired standard error.

Run (the figures in ``benchmarks/README.md``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hierarchy_gap.py --epochs 60 \\
        --out /tmp/hierarchy_gap
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

MODELS = "vae,hvae,ladder-vae,hvamp-vae"


def model_args(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One width for all; the two-level models add the top layer."""
    out: dict[str, Any] = {"latent_dim": args.latent_dim, "hidden": [args.hidden]}
    if name in ("hvae", "ladder-vae", "hvamp-vae"):
        out |= {"top_dim": args.top_dim, "top_hidden": [args.top_hidden]}
    return out


def train_arm(name: str, args: argparse.Namespace):
    """One arm trained by the library with every training option written out."""
    from ppl_vae.infer.config import TrainConfig
    from ppl_vae.runs.config import RunConfig
    from ppl_vae.runs.train import train_run

    warm = {"beta_schedule": "linear", "warmup_steps": args.warmup_steps}
    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=False,
        **(warm if args.warmup_steps else {}),
    )
    cfg = RunConfig(
        model=name,
        model_args=model_args(name, args),
        data=args.data,
        binarize="dynamic",
        train=train,
    )
    return train_run(cfg)


def scores(pair, x: torch.Tensor, k: int) -> torch.Tensor:
    """Per-digit IW log p(x), K draws, one seed for every arm."""
    from ppl_vae.measure.importance import iw_log_likelihood

    with torch.no_grad():
        return iw_log_likelihood(pair, x, None, k, seed=123).double()


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


def row(name: str, run, ll: torch.Tensor, base: torch.Tensor, seconds: float) -> dict:
    mean, se = mean_se(ll)
    diff, paired = mean_se(ll - base)
    return {
        "model": name,
        "log_px": mean,
        "se": se,
        "gain": diff,
        "paired_se": paired,
        "test_elbo": run.metrics["test_elbo"],
        "rate": run.metrics.get("rate"),
        "test_elbo_by_epoch": [h.get("test_elbo") for h in run.metrics["history"]],
        "train_seconds": run.metrics["seconds"],
        "eval_seconds": seconds,
    }


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"{args.data}, {args.epochs} epochs, batch {args.batch_size}, Adam {args.lr:g}, "
        f"seed {args.seed}, warm-up {args.warmup_steps} steps; IW log p(x) K={args.iwae_samples}"
        f" on {rows[0]['n']} test digits",
        "| model | IW log p(x) ± SE | gain over vae (paired SE) | test ELBO | train s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['log_px']:.2f} ± {r['se']:.2f} | {r['gain']:+.2f} "
            f"({r['paired_se']:.2f}) | {r['test_elbo']:.2f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=MODELS, help="comma-separated; the first is the base")
    p.add_argument("--data", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-steps", type=int, default=0, help="linear KL warm-up, all arms")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--top-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--top-hidden", type=int, default=128)
    p.add_argument("--iwae-samples", type=int, default=1000)
    p.add_argument("--test-rows", type=int, default=0, help="score the first N (0: all)")
    p.add_argument("--out", default="/tmp/hierarchy_gap")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    base = None
    for name in args.models.split(","):
        run = train_arm(name, args)
        x = run.dataset.x_test[: args.test_rows or None]
        t0 = time.perf_counter()
        ll = scores(run.pair, x, args.iwae_samples)
        base = ll if base is None else base
        rows.append(row(name, run, ll, base, time.perf_counter() - t0) | {"n": len(ll)})
        print(json.dumps(rows[-1]), flush=True)
    report = {"settings": vars(args), "rows": rows, "best": max(rows, key=lambda r: r["gain"])}
    (out / "hierarchy_gap.json").write_text(json.dumps(report, indent=1))
    print(table(rows, args))
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
