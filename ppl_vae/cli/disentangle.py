"""``ppl-vae disentangle DIR``: MIG, beta-VAE, FactorVAE and DCI scores of a trained run on
data with known factors, written to ``DIR/disentanglement.json`` with a traversal figure.

By default with disentanglement_lib's study settings (10000 points, batches of 64,
gradient-boosted trees for DCI; minutes on a small model), ``--fast`` with 3 to 17 times
fewer points and a random forest (seconds); the record keeps the ``settings`` and says
``reference_settings: true|false``. The job is :mod:`ppl_vae.runs.disentangle`."""

from __future__ import annotations

import argparse


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
    from ppl_vae.runs.disentangle import METRICS, disentangle_run  # heavy: only to run

    record, out, page = disentangle_run(
        args.run_dir, args.seed, args.fast, args.dci_classifier, args.device, args.trust
    )
    for name in METRICS:
        print(f"{name:<20} {record[name]:.3f}")
    best = ", ".join(f"z{d['latent']}: {d['factor']}" for d in record["latents"] if d["active"])
    print(f"latents (best factor): {best or 'none active'}")
    if record["reference_settings"]:
        print("settings: disentanglement_lib's study settings (comparable with published scores)")
    else:
        print("settings: not the reference's (--fast or --dci-classifier); not comparable")
    print(f"wrote {out}")
    if page is not None:
        print(f"report: {page}")
    return 0
