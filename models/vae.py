"""The variational autoencoder (Kingma & Welling 2014) as a Pyro program.

Generative story, for each example :math:`n`:

.. math::

    z_n \\sim \\mathcal{N}(0, I_d), \\qquad
    x_n \\mid z_n \\sim p_\\theta(x \\mid z_n) \\quad
    \\text{(Bernoulli logits, Gaussian, or continuous Bernoulli from an MLP decoder)}.

Guide (the amortised encoder):

.. math::

    q_\\phi(z \\mid x) = \\mathcal{N}\\big(\\mu_\\phi(x),
    \\operatorname{diag} \\sigma_\\phi(x)^2\\big),

sampled with the reparameterisation :math:`z = \\mu_\\phi(x) + \\sigma_\\phi(x) \\odot
\\epsilon` (Pyro's ``rsample``), so gradients of the ELBO reach the encoder.

Example::

    >>> import torch
    >>> vae = VAE(x_dim=64, latent_dim=2, hidden=(128,))
    >>> vae.posterior(torch.rand(4, 64)).batch_shape, vae.generate(3).shape
    (torch.Size([4]), torch.Size([3, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks import likelihoods
from ppl_vae.models.blocks.autoencoder import Autoencoder
from ppl_vae.models.blocks.nets import make_decoder, make_gaussian_encoder, parse_hidden


class VAE(Autoencoder):
    """MLP (``net="mlp"``) or convolutional (``net="conv"``, for image data) encoder and
    decoder; ``hidden`` lists the encoder's dense layer widths (the decoder mirrors them).
    ``image_shape`` ``(C, H, W)`` comes from the data set."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
        net: str = "mlp",
        image_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__(x_dim, latent_dim)
        hidden = parse_hidden(hidden)
        self.lik = likelihoods.make(likelihood)
        self.encoder = make_gaussian_encoder(net, x_dim, latent_dim, hidden, image_shape)
        out = self.lik.out_features(x_dim)
        self.decoder = make_decoder(net, latent_dim, out, hidden, image_shape)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return self.lik.distribution(self.decoder(z))

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)


MODEL = VAE
