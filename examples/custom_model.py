"""Write your own generative model as a Pyro program and train it with the suite's tools.

This file is both a script and a model file for the CLI:

    ppl-vae train examples/custom_model.py --epochs 20 --out runs/laplace-vae
    python examples/custom_model.py

The model is a VAE with a heavy-tailed prior, :math:`z_j \\sim \\mathrm{Laplace}(0, 1)`,
and a Bernoulli decoder; the guide is the usual diagonal Gaussian. Only ``prior``,
``likelihood`` and ``posterior`` are written here: ``model``/``guide`` come from
:class:`ppl_vae.autoencoder.Autoencoder`, so beta schedules, evaluation and checkpoints
work unchanged. The ELBO's KL term has no closed form for this pair, so the trainer's
``Trace_ELBO`` estimates it from samples.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from ppl_vae.autoencoder import Autoencoder
from ppl_vae.likelihoods import Bernoulli
from ppl_vae.nets import GaussianHead, mlp


class LaplaceVAE(Autoencoder):
    """Laplace prior, Bernoulli decoder, Gaussian guide."""

    def __init__(self, x_dim: int, latent_dim: int = 2, hidden: int = 128):
        super().__init__(x_dim, latent_dim)
        self.lik = Bernoulli()
        self.encoder = GaussianHead(x_dim, [hidden], latent_dim)
        self.decoder = mlp([latent_dim, hidden, x_dim])

    def prior(self) -> dist.TorchDistribution:
        loc = self._zero.expand(self.latent_dim)
        return dist.Laplace(loc, torch.ones_like(loc)).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return self.lik.distribution(self.decoder(z))

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)


MODEL = LaplaceVAE

if __name__ == "__main__":
    from ppl_vae.run import RunConfig, train_run
    from ppl_vae.train import TrainConfig

    job = train_run(RunConfig(model=__file__, train=TrainConfig(epochs=20)))
    print({k: job.metrics[k] for k in ("test_elbo", "rate", "distortion", "active_units")})
