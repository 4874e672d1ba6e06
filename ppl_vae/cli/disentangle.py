"""``ppl-vae disentangle DIR``: MIG, beta-VAE, FactorVAE and DCI scores of a trained run on
data with known factors, written to ``DIR/disentanglement.json`` with a traversal figure."""

from __future__ import annotations

import argparse

FIGURE = "disentanglement_traversals.png"


def register(sub) -> None:
    p = sub.add_parser(
        "disentangle", help="disentanglement metrics of a run trained on data with known factors"
    )
    p.add_argument("run_dir", metavar="DIR", help="a run directory written by `ppl-vae train`")
    p.add_argument("--seed", type=int, default=0, help="seed of the metrics' sampling")
    p.add_argument(
        "--dci-classifier",
        default="forest",
        choices=("forest", "gbt"),
        help="DCI importances from a random forest (fast) or gradient boosting (the paper's)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae import validate
    from ppl_vae.figures import report
    from ppl_vae.runs import disentangle
    from ppl_vae.runs.build import load_run
    from ppl_vae.runs.rundir import RunDir

    validate.seed(args.seed)
    validate.device(args.device)
    pair, ds, _ = load_run(args.run_dir, args.device, args.trust)
    record = disentangle.scores(
        pair, ds, seed=args.seed, sizes={"dci": {"classifier": args.dci_classifier}}
    )
    figure = disentangle.traversals(pair, ds, record)
    run_dir = RunDir(args.run_dir)
    with run_dir.lock():
        out = run_dir.write_json("disentanglement.json", record)
        with run_dir.atomic_path(FIGURE) as tmp:
            figure.savefig(tmp, dpi=figure.dpi, format="png")
    for name in disentangle.METRICS:
        print(f"{name:<20} {record[name]:.3f}")
    best = ", ".join(f"z{d['latent']}: {d['factor']}" for d in record["latents"] if d["active"])
    print(f"latents (best factor): {best or 'none active'}")
    print(f"wrote {out}")
    if (page := report.refresh(args.run_dir)) is not None:
        print(f"report: {page}")
    return 0
