"""Train a beta-VAE with a linear KL warm-up from Python; print and plot beta, rate and
distortion per epoch.

The warm-up :math:`\\beta(t) = s + (\\beta - s)\\min(1, t/T)` is a pure function of the
step that the trainer evaluates and applies itself: it wraps *both* programs in a
``poutine.scale`` restricted to the latent sites (:mod:`ppl_vae.infer.latent_scale`), so the
model and guide take no ``beta`` argument (any Pyro program works). Early on the KL term
is nearly free, so the encoder starts using the code before the full penalty arrives --
the usual cure for posterior collapse.

Run::

    python examples/beta_vae_schedule.py --beta 4 --epochs 20 --warmup-epochs 10 --out warmup.png
"""

from __future__ import annotations

import argparse
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from ppl_vae.models.vae import VAE

from ppl_vae import data
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import fit
from ppl_vae.measure import failure_modes


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--beta", type=float, default=2.0, help="the target KL weight")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--warmup-epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--out", default="beta_warmup.png", help="PNG for the per-epoch curves")
    args = p.parse_args(argv)

    ds = data.load(args.data)
    config = TrainConfig(epochs=args.epochs, beta=args.beta, progress=False)
    steps_per_epoch = math.ceil(ds.x_train.shape[0] / config.batch_size)
    config = config.replace(
        beta_schedule="linear", warmup_steps=args.warmup_epochs * steps_per_epoch
    )
    vae = VAE(ds.x_dim, latent_dim=args.latent_dim)
    result = fit(vae.model, vae.guide, ds, config)

    print(f"{'epoch':>5} {'beta':>7} {'rate':>8} {'distortion':>10} {'active':>6}")
    for h in result.history:
        print(
            f"{h['epoch']:>5} {h['beta']:>7.3f} {h['rate']:>8.3f} {h['distortion']:>10.3f} "
            f"{h['active_units']:>6}"
        )
    for warning in failure_modes.diagnose(result.last, result.pair, ds.x_test, ds.y_test):
        print(f"warning: {warning}")

    epochs = [h["epoch"] for h in result.history]
    fig = Figure(figsize=(9, 3), dpi=110)
    FigureCanvasAgg(fig)
    for i, key in enumerate(("beta", "rate", "distortion")):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot(epochs, [h[key] for h in result.history], "o-", ms=3)
        ax.set_xlabel("epoch")
        ax.set_title(key + (" (nats)" if key != "beta" else " (end of epoch)"))
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
