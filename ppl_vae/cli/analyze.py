"""``ppl-vae analyze DIR``: posterior analysis of a trained run
(see :mod:`ppl_vae.analysis.posterior`).

Works for any trained program pair (the suite's models and a user's ``.py`` alike), with
the split's labels passed where the programs take them. Writes ``DIR/analysis/``:
``posterior.nc`` (guide and prior draws of every latent site, dims ``chain, draw, point,
<site>_dim``), ``summary.csv`` (``az.summary`` of the guide draws), ``nuts.nc`` and
``nuts_summary.csv`` (NUTS reference posteriors with R-hat and ESS), ``report.json``
(the ``step`` of the checkpoint analysed, PSIS k-hat per point and the shares above 0.5
and 0.7, the NUTS-vs-guide table, and under ``amortization`` the approximation and
amortisation gaps of ``--amortization-points`` points, Cremer et al. 2018) and
``khat.png``, ``density.png``, ``pair.png``.

Example::

    ppl-vae analyze runs/vae --points 50 --draws 1000 --nuts-points 3 --chains 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ppl_vae import validate
from ppl_vae.errors import UserError
from ppl_vae.runs.rundir import RunDir


def register(sub) -> None:
    p = sub.add_parser("analyze", help="guide draws, PSIS k-hat and NUTS reference posteriors")
    p.add_argument("run_dir", help="a run directory written by `ppl-vae train --out`")
    p.add_argument("--points", type=int, default=50, help="test points to analyse")
    p.add_argument("--draws", type=int, default=1000, help="guide draws per point (PSIS, summary)")
    p.add_argument("--nuts-points", type=int, default=3, help="points with a NUTS reference")
    p.add_argument("--chains", type=int, default=2, help="NUTS chains per point (sequential)")
    p.add_argument("--nuts-samples", type=int, default=500, help="NUTS draws per chain")
    p.add_argument("--nuts-warmup", type=int, default=300, help="NUTS warm-up steps per chain")
    p.add_argument(
        "--amortization-points",
        type=int,
        default=10,
        help="of the --points, those whose amortisation gap is measured (0: none)",
    )
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs.evaluate import load_split_at_step  # heavy: imported only to run

    for name in ("points", "draws", "chains", "nuts_samples"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.nuts_points < 0 or args.nuts_warmup < 0:
        raise UserError("--nuts-points and --nuts-warmup cannot be negative")
    validate.draws(args.draws)
    validate.seed(args.seed)
    validate.device(args.device)
    for name in ("points", "chains", "nuts_samples", "nuts_points", "nuts_warmup"):
        validate.integer(name, getattr(args, name), 0, validate.MAX_SAMPLES)
    if args.amortization_points < 0:
        raise UserError("--amortization-points cannot be negative")
    run_dir = Path(args.run_dir)
    from ppl_vae.analysis.posterior import analyze
    from ppl_vae.figures import report

    pair, x, y, step = load_split_at_step(run_dir, args.split, args.device, args.trust)
    out = run_dir / "analysis"
    # the lock; the files go in the manifest (an absolute root: RunDir.recording lists the
    # folder's files relative to it, which fails for a relative run directory)
    with RunDir(run_dir.absolute()).recording("analysis"):
        r = analyze(
            pair,
            x,
            out,
            y if pair.takes_labels else None,
            points=args.points,
            draws=args.draws,
            nuts_points=args.nuts_points,
            chains=args.chains,
            seed=args.seed,
            nuts_samples=args.nuts_samples,
            nuts_warmup=args.nuts_warmup,
            amortization_points=args.amortization_points,
            step=step,
        )
    print(
        f"PSIS k-hat over {len(r['points'])} {args.split} points ({args.draws} guide draws): "
        f"median {r['khat_median']:.2f}, max {r['khat_max']:.2f}, "
        f"{100 * r['khat_share_above_0.5']:.0f}% > 0.5, "
        f"{100 * r['khat_share_above_0.7']:.0f}% > 0.7"
    )
    print(f"mean gap log p(x) - ELBO (= KL(q || posterior)): {r['mean_gap_kl_q_to_posterior']:.3f}")
    gap = r.get("amortization") or {}
    if gap.get("amortization_gap") is not None:
        approx = gap["approximation_gap"]
        approx = (
            "n/a" if approx is None else f"{approx:.3f} +- {gap['approximation_gap_se'] or 0:.3f}"
        )
        print(
            f"amortisation gap over {gap['points']} points: "
            f"{gap['amortization_gap']:.3f} +- {gap['amortization_gap_se'] or 0:.3f} nats; "
            f"approximation gap {approx}"
        )
    elif gap.get("note"):
        print(f"amortisation gap: n/a ({gap['note']})")
    if r["nuts"]:
        print(
            f"{'point':>6} {'R-hat':>6} {'ESS':>6} {'div':>4} {'shift/sd':>8} {'k-hat':>6} "
            f"{'gap':>6}"
        )
        for row in r["nuts"]:
            if "skipped" in row:
                print(f"{row['point']:>6} NUTS skipped: {row['skipped']}")
                continue
            rhat = "n/a" if row["rhat_max"] is None else f"{row['rhat_max']:.3f}"
            print(
                f"{row['point']:>6} {rhat:>6} {row['ess_bulk_min']:>6.0f} {row['divergences']:>4} "
                f"{row['mean_shift_in_nuts_sd']:>8.2f} {row['khat']:>6.2f} "
                f"{row['gap_kl_q_to_posterior']:>6.3f}"
            )
    print(f"wrote {out}")
    if (page := report.refresh(run_dir)) is not None:
        print(f"report: {page}")
    return 0
