"""The VAE with a learned mixture-of-Gaussians prior.

Generative story, for each example :math:`n`:

.. math::

    z_n \\sim p_\\lambda(z) = \\sum_{k=1}^K \\pi_k\\,
        \\mathcal{N}(z;\\, m_k, \\operatorname{diag} s_k^2), \\qquad
    x_n \\mid z_n \\sim p_\\theta(x \\mid z_n),

with means :math:`m_k`, scales :math:`s_k = \\mathrm{softplus}(\\cdot)` and weights
:math:`\\pi = \\mathrm{softmax}(\\ell)` all learned. The guide is the VAE's diagonal
Gaussian encoder. The prior is a ``MixtureSameFamily``; the KL term is estimated from the
traces. Means start spread as :math:`\\mathcal{N}(0, I)` draws, scales at 1, weights equal.

Example::

    >>> m = MoGVAE(x_dim=64, latent_dim=2, hidden=(32,), components=5)
    >>> m.prior().log_prob(torch.zeros(4, 2)).shape, m.generate(3).shape
    (torch.Size([4]), torch.Size([3, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from ppl_vae.models.vae import VAE
from torch import nn


class MoGVAE(VAE):
    """:class:`~models.vae.VAE` with a ``components``-Gaussian mixture prior."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
        components: int = 10,
    ):
        super().__init__(x_dim, latent_dim, hidden, likelihood)
        k = int(components)
        self.means = nn.Parameter(torch.randn(k, latent_dim))
        # softplus(0.5413) = 1: the components start as unit Gaussians.
        self.raw_scales = nn.Parameter(torch.full((k, latent_dim), 0.5413))
        self.logits = nn.Parameter(torch.zeros(k))

    def prior(self) -> dist.TorchDistribution:
        """:math:`p(z) = \\sum_k \\pi_k \\mathcal{N}(m_k, \\operatorname{diag} s_k^2)`."""
        components = dist.Normal(self.means, F.softplus(self.raw_scales) + 1e-4).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


MODEL = MoGVAE
