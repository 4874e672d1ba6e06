"""``ppl-vae evaluate DIR``: the ELBO and the importance-weighted log-likelihood of a run.

Writes ``DIR/evaluation.json`` (atomically) with, for ``--split test`` (the default),
``test_elbo``, ``test_log_likelihood`` (the importance-weighted estimate of the mean
:math:`\\log p(x)` per example with ``--iwae-samples K`` draws, in nats),
``test_log_likelihood_se`` (its standard error over examples), ``rate``, ``distortion``,
``active_units``, ``kl_per_dim``, ``recon_mse``, ``iwae_samples``, ``split``, ``examples``,
``seed`` and ``seconds``. With ``--split train`` the two split-specific keys are named
``train_elbo`` and ``train_log_likelihood`` (and ``..._se``), and the diagnostics are on
the training set. ``DIR/evaluation-train.json`` keeps the train split apart from the
test record, so the two never overwrite each other.

Example::

    ppl-vae evaluate runs/vae --iwae-samples 5000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ppl_vae import validate
from ppl_vae.runs.rundir import RunDir

SPLITS = ("test", "train")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="ELBO and importance-weighted log p(x) of a trained run")
    p.add_argument("run_dir", help="a run directory written by `ppl-vae train --out`")
    p.add_argument(
        "--iwae-samples", type=int, default=1000, metavar="K", help="importance samples per example"
    )
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100, help="examples per batch")
    p.add_argument("--chunk-size", type=int, help="particles per chunk (default: memory-bounded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def output_path(run_dir: Path, split: str) -> Path:
    return run_dir / ("evaluation.json" if split == "test" else f"evaluation-{split}.json")


def run(args: argparse.Namespace) -> int:
    from ppl_vae.figures import report  # heavy: imported only to run
    from ppl_vae.measure.importance import evaluation
    from ppl_vae.runs.build import load_split

    validate.iwae_samples(args.iwae_samples)
    validate.batch_size(args.batch_size)
    validate.seed(args.seed)
    if args.chunk_size is not None:
        validate.chunk_size(args.chunk_size)
    run_dir = Path(args.run_dir)
    pair, x, y = load_split(run_dir, args.split, args.device, args.trust)
    record = evaluation(
        pair,
        x,
        y,
        args.iwae_samples,
        split=args.split,
        seed=args.seed,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    run = RunDir(run_dir)
    with run.lock():  # one writer: not while a training run writes here
        out = run.write_json(output_path(Path(), args.split).name, record)
    print(table(record, args.split))
    print(f"wrote {out}")
    if (page := report.refresh(run)) is not None:
        print(f"report: {page}")
    return 0


def table(record: dict, split: str) -> str:
    """A short two-column table of the headline figures."""

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    ll = record[f"{split}_log_likelihood"]
    rows = [
        (f"{split} ELBO (nats)", record[f"{split}_elbo"]),
        (f"{split} log p(x), IW K={record['iwae_samples']}", ll),
        ("  minus ELBO", None if ll is None else ll - record[f"{split}_elbo"]),
        ("rate (KL)", record["rate"]),
        ("distortion", record["distortion"]),
        ("active units", record["active_units"]),
        ("recon MSE", record["recon_mse"]),
        ("seconds", record["seconds"]),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {fmt(v):>10}" for k, v in rows]
    if record.get("log_likelihood_note"):
        lines.append(f"note: {record['log_likelihood_note']}")
    return "\n".join(lines)
