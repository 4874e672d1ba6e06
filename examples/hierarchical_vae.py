"""A two-layer hierarchical VAE, :math:`z_1 \\to z_2 \\to x`: a model with two latent sites.

Generative story, for each example:

.. math::

    z_1 \\sim \\mathcal{N}(0, I_{d_1}), \\qquad
    z_2 \\mid z_1 \\sim \\mathcal{N}(\\mu(z_1), \\operatorname{diag}\\sigma(z_1)^2), \\qquad
    x \\mid z_2 \\sim \\mathrm{Bernoulli}(\\mathrm{logits} = f(z_2)).

Guide, top-down like the model: :math:`q(z_1, z_2 \\mid x) = q(z_1 \\mid x)\\,
q(z_2 \\mid z_1, x)`, both diagonal Gaussians from one shared encoding of :math:`x`.

Nothing in the engine is told there are two latent sites: it finds ``z1`` and ``z2`` in
the guide's trace, so the rate is :math:`\\mathrm{KL}(q(z_1|x)\\|p(z_1)) +
\\mathbb{E}_{q(z_1|x)}\\mathrm{KL}(q(z_2|z_1,x)\\|p(z_2|z_1))`, ``kl_per_dim`` has
:math:`d_1 + d_2` entries and the importance-weighted :math:`\\log p(x)` weighs joint draws
of both. Figures that decode a single code (manifold, traversals) are skipped.

From the command line (``--latent-dim`` sets :math:`d_1`, ``--set z2_dim=...`` sets
:math:`d_2`)::

    ppl-vae train examples/hierarchical_vae.py --latent-dim 2 --set z2_dim=8 --out runs/hvae
    ppl-vae evaluate runs/hvae --iwae-samples 1000

From Python::

    python examples/hierarchical_vae.py
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn


def gaussian(out: torch.Tensor) -> dist.Distribution:
    """A diagonal Gaussian with one event dimension from ``(loc, raw scale)`` halves."""
    loc, raw = out.chunk(2, dim=-1)
    return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)


def mlp(sizes) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class HierarchicalVAE(nn.Module):
    """Two stochastic layers; ``latent_dim`` is :math:`d_1` (top), ``z2_dim`` :math:`d_2`."""

    def __init__(self, x_dim: int = 64, latent_dim: int = 2, z2_dim: int = 8, hidden: int = 64):
        super().__init__()
        hidden = int(str(hidden).split(",")[0])
        self.z1_dim, self.z2_dim = latent_dim, z2_dim
        # p(z2 | z1) and p(x | z2)
        self.prior_z2 = mlp([latent_dim, hidden, 2 * z2_dim])
        self.decoder = mlp([z2_dim, hidden, x_dim])
        # q(z1 | x) and q(z2 | z1, x), sharing an encoding h(x)
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU())
        self.q_z1 = nn.Linear(hidden, 2 * latent_dim)
        self.q_z2 = mlp([hidden + latent_dim, hidden, 2 * z2_dim])

    def model(self, x):
        pyro.module("hvae", self)
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros(x.shape[0], self.z1_dim)
            z1 = pyro.sample("z1", dist.Normal(loc, 1.0).to_event(1))
            z2 = pyro.sample("z2", gaussian(self.prior_z2(z1)))
            logits = self.decoder(z2)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("hvae", self)
        with pyro.plate("data", x.shape[0]):
            h = self.encoder(x)
            z1 = pyro.sample("z1", gaussian(self.q_z1(h)))
            # z1 may carry extra batch dimensions on the left (vectorised particles)
            h = h.expand(*z1.shape[:-1], h.shape[-1])
            pyro.sample("z2", gaussian(self.q_z2(torch.cat([h, z1], -1))))


def main(argv=None) -> float:
    import argparse

    from ppl_vae import data
    from ppl_vae.infer.config import TrainConfig
    from ppl_vae.infer.trainer import fit
    from ppl_vae.measure.likelihood import evaluation

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--latent-dim", type=int, default=2, help="d1, the top layer")
    p.add_argument("--z2-dim", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--iwae-samples", type=int, default=500)
    args = p.parse_args(argv)

    ds = data.load("digits")
    cfg = TrainConfig(epochs=args.epochs, progress=False)
    pyro.set_rng_seed(cfg.seed)
    hvae = HierarchicalVAE(ds.x_dim, args.latent_dim, args.z2_dim, args.hidden)
    result = fit(hvae.model, hvae.guide, ds, cfg)
    pair, last = result.pair, result.last
    print(f"latent sites {pair.latent_sites} of sizes {pair.latent_sizes}")
    print(
        f"test ELBO {last['test_elbo']:.3f}: rate {last['rate']:.3f} "
        f"(z1 {sum(last['kl_per_dim'][: hvae.z1_dim]):.3f}, "
        f"z2 {sum(last['kl_per_dim'][hvae.z1_dim :]):.3f}), distortion {last['distortion']:.3f}"
    )
    ev = evaluation(pair, ds.x_test, num_samples=args.iwae_samples)
    k = args.iwae_samples
    print(f"IW log p(x) with K={k} (both sites): {ev['test_log_likelihood']:.3f}")
    return last["test_elbo"]


if __name__ == "__main__":
    main()
