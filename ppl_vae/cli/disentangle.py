"""``ppl-vae disentangle DIR``: MIG, beta-VAE, FactorVAE and DCI scores of a trained run on
data with known factors, written to ``DIR/disentanglement.json`` with a traversal figure.

By default with disentanglement_lib's study settings (10000 points, batches of 64,
gradient-boosted trees for DCI; minutes on a small model), ``--fast`` with 3 to 17 times
fewer points and a random forest (seconds); the record keeps the ``settings`` and says
``reference_settings: true|false``."""

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
        "--fast",
        action="store_true",
        help="3 to 17 times fewer points and a random forest for DCI: seconds, not minutes, "
        "but noisier and not comparable with published scores (default: disentanglement_lib's "
        "study settings)",
    )
    p.add_argument(
        "--dci-classifier",
        default=None,
        choices=("forest", "gbt"),
        help="DCI importances from gradient-boosted trees (disentanglement_lib's, the default) "
        "or a random forest (the --fast default)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae import validate
    from ppl_vae.figures import report
    from ppl_vae.runs import checkpoint, disentangle
    from ppl_vae.runs.build import load_run
    from ppl_vae.runs.rundir import RunDir

    validate.seed(args.seed)
    validate.device(args.device)
    (pair, ds, _), step = checkpoint.read_at_step(
        args.run_dir, lambda: load_run(args.run_dir, args.device, args.trust)
    )
    sizes = {"dci": {"classifier": args.dci_classifier}} if args.dci_classifier else None
    record = disentangle.scores(pair, ds, seed=args.seed, sizes=sizes, fast=args.fast)
    record["step"] = step  # the checkpoint scored (the report flags a run trained since)
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
    if record["reference_settings"]:
        print("settings: disentanglement_lib's study settings (comparable with published scores)")
    else:
        print("settings: not the reference's (--fast or --dci-classifier); not comparable")
    print(f"wrote {out}")
    if (page := report.refresh(args.run_dir)) is not None:
        print(f"report: {page}")
    return 0
