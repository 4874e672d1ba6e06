"""``ppl-vae calibrate DIR``: simulation-based calibration of a run's guide.

Draws ``--simulations`` pairs (z, x) from the trained model and ``--draws`` samples of
q(z | x) for each, and ranks the true z among them per latent site and dimension (Talts et
al. 2018): a guide equal to the posterior gives uniform ranks. Writes
``DIR/calibration.json`` (per site and dimension the rank ``histogram`` in ``--bins`` bins,
its ``expected`` counts, the chi-square uniformity ``p_value``, the rank ``dispersion``
relative to uniform ranks, ``spread``: ``under`` for a guide too narrow, ``over`` for one
too wide, ``ok``; the ``bias`` and ``passed``; overall ``passed``, Bonferroni-corrected)
and ``DIR/calibration.png`` (the rank histograms with their 99% band), and refreshes the
report. Works for any program pair whose model scores x at one site, several latent sites
included.

Example::

    ppl-vae calibrate runs/vae --simulations 1000 --draws 99
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="simulation-based calibration of a run's guide")
    p.add_argument("run_dir", help="a run directory written by `ppl-vae train --out`")
    p.add_argument("--simulations", type=int, default=1000, help="(z, x) pairs drawn")
    p.add_argument("--draws", type=int, default=99, help="guide draws per simulated x")
    p.add_argument("--bins", type=int, default=10, help="bins of each rank histogram")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs.calibrate import calibrate_run, table  # heavy: imported only to run

    record, out, figure, page = calibrate_run(
        args.run_dir,
        simulations=args.simulations,
        draws=args.draws,
        bins=args.bins,
        seed=args.seed,
        device=args.device,
        trust=args.trust,
    )
    print(table(record))
    print(f"wrote {out} and {figure}")
    if page is not None:
        print(f"report: {page}")
    return 0
