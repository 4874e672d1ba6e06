"""``ppl-vae analyze DIR``: posterior analysis of a trained run
(see :mod:`ppl_vae.analysis.posterior`; the job: :mod:`ppl_vae.runs.analyze`).

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
    from ppl_vae.runs.analyze import analyze_run  # heavy: imported only to run

    names = ("points", "draws", "nuts_points", "chains", "seed", "nuts_samples")
    names += ("nuts_warmup", "amortization_points")
    options = {name: getattr(args, name) for name in names}
    r, out, page = analyze_run(args.run_dir, args.split, args.device, args.trust, **options)
    print_psis(r, args.split, args.draws)
    print_amortization(r.get("amortization") or {})
    print_nuts(r["nuts"])
    print(f"wrote {out}")
    if page is not None:
        print(f"report: {page}")
    return 0


def print_psis(r: dict, split: str, draws: int) -> None:
    if "psis_note" in r:  # global latent sites: no per-point k-hat or IW bound
        print(f"note: {r['psis_note']}")
        return
    print(
        f"PSIS k-hat over {len(r['points'])} {split} points ({draws} guide "
        f"draws): median {r['khat_median']:.2f}, max {r['khat_max']:.2f}, "
        f"{100 * r['khat_share_above_0.5']:.0f}% > 0.5, "
        f"{100 * r['khat_share_above_0.7']:.0f}% > 0.7"
    )
    gap_kl = r["mean_gap_kl_q_to_posterior"]
    print(f"mean gap log p(x) - ELBO (= KL(q || posterior)): {gap_kl:.3f}")


def print_amortization(gap: dict) -> None:
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


def print_nuts(rows: list[dict]) -> None:
    if not rows:
        return
    print(
        f"{'point':>6} {'R-hat':>6} {'ESS':>6} {'div':>4} {'shift/sd':>8} {'k-hat':>6} {'gap':>6}"
    )
    for row in rows:
        if "skipped" in row:
            print(f"{row['point']:>6} NUTS skipped: {row['skipped']}")
            continue
        rhat = "n/a" if row["rhat_max"] is None else f"{row['rhat_max']:.3f}"
        khat, gap_kl = row.get("khat"), row.get("gap_kl_q_to_posterior")
        print(
            f"{row['point']:>6} {rhat:>6} {row['ess_bulk_min']:>6.0f} {row['divergences']:>4} "
            f"{row['mean_shift_in_nuts_sd']:>8.2f} "
            f"{'n/a' if khat is None else f'{khat:.2f}':>6} "
            f"{'n/a' if gap_kl is None else f'{gap_kl:.3f}':>6}"
        )
