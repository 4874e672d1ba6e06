"""The conditional VAE (Sohn et al. 2015): a VAE whose decoder and encoder both see a label.

Generative story, for each example :math:`n` with label :math:`y_n` (one-hot
:math:`e_{y_n}`):

.. math::

    z_n \\sim \\mathcal{N}(0, I), \\qquad
    x_n \\mid z_n, y_n \\sim p_\\theta(x \\mid z_n, e_{y_n}) \\quad
    \\text{(an MLP decoder on } [z, e_y]\\text{)}.

Guide: :math:`q_\\phi(z \\mid x, y) = \\mathcal{N}(\\mu_\\phi(x, e_y),
\\operatorname{diag} \\sigma_\\phi(x, e_y)^2)`. The ELBO is that of the VAE, conditioned on
:math:`y`: :math:`\\mathbb{E}_q[\\log p(x|z,y)] - \\mathrm{KL}(q(z|x,y) \\| p(z))`.
Class-conditional generation: :math:`z \\sim p(z)`, then the decoder mean at a chosen label.

Example::

    >>> import torch
    >>> m = CVAE(x_dim=64, num_classes=10, latent_dim=2, hidden=(32,))
    >>> m.generate(3, y=torch.tensor([0, 1, 2])).shape
    torch.Size([3, 64])
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from ppl_vae.models.blocks import likelihoods
from ppl_vae.models.blocks.autoencoder import LATENT, OBSERVED, Autoencoder
from ppl_vae.models.blocks.nets import GaussianHead, mlp, parse_hidden


def with_label(t: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[t, one_hot(y)]`` on the last axis, the label broadcast over ``t``'s batch shape."""
    onehot = F.one_hot(y.long(), num_classes).to(t.dtype)
    onehot = onehot.expand(*torch.broadcast_shapes(t.shape[:-1], onehot.shape[:-1]), -1)
    return torch.cat([t.expand(*onehot.shape[:-1], -1), onehot], dim=-1)


class CVAE(Autoencoder):
    """MLP encoder on ``[x, e_y]`` and decoder on ``[z, e_y]``."""

    def __init__(
        self,
        x_dim: int,
        num_classes: int = 10,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
    ):
        super().__init__(x_dim, latent_dim)
        hidden = parse_hidden(hidden)
        self.num_classes = int(num_classes)
        self.lik = likelihoods.make(likelihood)
        self.encoder = GaussianHead(x_dim + self.num_classes, hidden, latent_dim)
        self.decoder = mlp(
            [latent_dim + self.num_classes, *reversed(hidden), self.lik.out_features(x_dim)]
        )

    def likelihood(self, z: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        return self.lik.distribution(self.decoder(with_label(z, y, self.num_classes)))

    def posterior(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.encoder(with_label(x, y, self.num_classes))
        return dist.Normal(loc, scale).to_event(1)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:math:`z \\sim p(z)`, :math:`x \\sim p(x|z,y)`."""
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample(LATENT, self.prior().expand([x.shape[0]]))
            return pyro.sample(OBSERVED, self.likelihood(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:math:`z \\sim q(z|x,y)`."""
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample(LATENT, self.posterior(x, y))

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.posterior(x, y).mean

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.likelihood(z, y).mean

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x, y), y)

    def generate(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` decoder means at :math:`z \\sim p(z)`; labels ``y`` (default: ``i mod C``)."""
        y = torch.arange(n, device=self._zero.device) % self.num_classes if y is None else y
        return self.decode(self.prior().sample([n]), y)


MODEL = CVAE
