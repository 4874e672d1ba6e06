"""Train a small VAE on the digits, then ask how good its amortised posterior is.

Steps, all from the Python API:

1. :func:`ppl_vae.infer.trainer.fit` fits the suite's VAE, a Pyro model/guide pair, with a 2-d
   latent space (any other pair, a user's own included, goes through the same calls);
2. :func:`ppl_vae.measure.likelihood.evaluation` compares the ELBO with the importance-weighted
   :math:`\\log \\hat p_K(x) = \\log \\frac1K \\sum_k p(x, z_k) / q(z_k|x)`, whose excess
   over the ELBO estimates :math:`\\mathrm{KL}(q(z|x) \\,\\|\\, p(z|x))` on average;
3. :func:`ppl_vae.runs.analyze.write_analysis` draws from the guide, computes PSIS k-hat per
   test point and runs NUTS on a few points with the parameters fixed
   (:func:`ppl_vae.analysis.posterior.analyze`), writing NetCDF, CSV, JSON and PNG files
   under ``OUT/analysis``.

Run::

    python examples/posterior_analysis.py --out runs/example-posterior --epochs 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ppl_vae.models.vae import VAE

from ppl_vae import data
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import fit
from ppl_vae.measure.likelihood import evaluation
from ppl_vae.runs.analyze import write_analysis


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/example-posterior")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--iwae-samples", type=int, default=1000)
    args = p.parse_args()

    ds = data.load("digits")
    vae = VAE(x_dim=ds.x_dim, latent_dim=2, hidden=[128])
    result = fit(vae.model, vae.guide, ds, TrainConfig(epochs=args.epochs, progress=False))
    pair = result.pair  # the model/guide pair with its trained parameters
    ev = evaluation(pair, ds.x_test, ds.y_test, args.iwae_samples)
    elbo, log_p = ev["test_elbo"], ev["test_log_likelihood"]
    print(
        f"test ELBO {elbo:.3f}, IW log p(x) (K={args.iwae_samples}) {log_p:.3f}: "
        f"gap {log_p - elbo:.3f} nats"
    )
    out = Path(args.out) / "analysis"
    report = write_analysis(
        pair,
        ds.x_test,
        out,
        ds.y_test,
        points=40,
        draws=1000,
        nuts_points=2,
        chains=2,
        nuts_samples=300,
        nuts_warmup=200,
    )
    print(
        f"k-hat > 0.5 for {100 * report['khat_share_above_0.5']:.0f}% of points, "
        f"> 0.7 for {100 * report['khat_share_above_0.7']:.0f}%"
    )
    for row in report["nuts"]:
        print(
            f"point {row['point']}: NUTS mean {row['nuts_mean']}, guide mean {row['guide_mean']}, "
            f"PSIS gap {row['gap_kl_q_to_posterior']:.3f}, R-hat {row['rhat_max']}"
        )
    print(f"files in {out}: {', '.join(report['figures'])}, posterior.nc, ...")


if __name__ == "__main__":
    main()
