"""The VAE with a VampPrior (Tomczak & Welling 2018): the prior is the guide's mixture at
K learned pseudo-inputs.

Generative story, for each example :math:`n`:

.. math::

    z_n \\sim p_\\lambda(z) = \\frac1K \\sum_{k=1}^K q_\\phi(z \\mid u_k), \\qquad
    x_n \\mid z_n \\sim p_\\theta(x \\mid z_n),

with pseudo-inputs :math:`u_1..u_K` (shaped like data, learned with everything else) and the
same encoder :math:`q_\\phi(z|x) = \\mathcal{N}(\\mu_\\phi(x), \\operatorname{diag}
\\sigma_\\phi(x)^2)` as the guide. The prior is a ``MixtureSameFamily`` of the K diagonal
Gaussians with equal weights; the KL term has no closed form and is estimated from the
traces (Monte Carlo), as the ELBO always is under ``Trace_ELBO``.

Example::

    >>> import torch
    >>> m = VampVAE(x_dim=64, latent_dim=2, hidden=(32,), num_pseudo=10)
    >>> p = m.prior()
    >>> p.batch_shape, p.event_shape, m.generate(3).shape
    (torch.Size([]), torch.Size([2]), torch.Size([3, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from ppl_vae.models.vae import VAE
from torch import nn


class VampVAE(VAE):
    """:class:`~models.vae.VAE` whose prior is the guide's mixture at ``num_pseudo``
    learned pseudo-inputs (initialised uniform in [0, 1], like pixel intensities)."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
        num_pseudo: int = 50,
    ):
        super().__init__(x_dim, latent_dim, hidden, likelihood)
        self.pseudo_inputs = nn.Parameter(torch.rand(int(num_pseudo), x_dim))

    def prior(self) -> dist.TorchDistribution:
        """:math:`p(z) = \\frac1K \\sum_k q(z|u_k)`."""
        loc, scale = self.encoder(self.pseudo_inputs)
        mixing = dist.Categorical(logits=torch.zeros_like(loc[:, 0]))
        return dist.MixtureSameFamily(mixing, dist.Normal(loc, scale).to_event(1))


MODEL = VampVAE
