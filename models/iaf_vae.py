"""The VAE with an inverse autoregressive flow guide (Kingma et al. 2016), conditioned on x.

Generative story: the VAE's, :math:`z_n \\sim \\mathcal{N}(0, I)`,
:math:`x_n \\mid z_n \\sim p_\\theta(x \\mid z_n)`. The guide pushes the diagonal Gaussian
through :math:`T` conditional affine autoregressive transforms with context
:math:`h = h_\\phi(x)` (the encoder's hidden layer), reversing the order between them:

.. math::

    z^{(0)} \\sim \\mathcal{N}(\\mu_\\phi(x), \\operatorname{diag} \\sigma_\\phi(x)^2),
    \\qquad z^{(t)}_i = \\mu_t(z^{(t-1)}_{<i}, h) + s_t(z^{(t-1)}_{<i}, h)\\, z^{(t-1)}_i,

.. math::

    \\log q(z^{(T)} \\mid x) = \\log \\mathcal{N}(z^{(0)}) - \\sum_{t=1}^T \\sum_i
        \\log s_t(z^{(t-1)}_{<i}, h),

so :math:`q(z|x)` has a full (non-diagonal) dependence between the coordinates. The
transforms are Pyro's ``ConditionalAffineAutoregressive``; the guide is a
``TransformedDistribution`` over them, conditioned on :math:`h`.

Example::

    >>> import torch
    >>> m = IAFVAE(x_dim=64, latent_dim=2, hidden=(32,), flows=2)
    >>> q = m.posterior(torch.rand(4, 64))
    >>> z = q.rsample()
    >>> z.shape, q.log_prob(z).shape
    (torch.Size([4, 2]), torch.Size([4]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from ppl_vae.models.blocks import likelihoods
from ppl_vae.models.blocks.autoencoder import Autoencoder
from ppl_vae.models.blocks.nets import mlp, parse_hidden
from torch import nn


class IAFVAE(Autoencoder):
    """MLP encoder giving a context and a Gaussian base, ``flows`` conditional IAF steps."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
        flows: int = 2,
        flow_hidden: int = 32,
    ):
        super().__init__(x_dim, latent_dim)
        hidden = parse_hidden(hidden)
        context = hidden[-1] if hidden else x_dim
        self.lik = likelihoods.make(likelihood)
        self.context = mlp([x_dim, *hidden], final=nn.ReLU()) if hidden else nn.Identity()
        self.head = nn.Linear(context, 2 * latent_dim)
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(latent_dim, context, [flow_hidden, flow_hidden])
            for _ in range(int(flows))
        )
        self.decoder = mlp([latent_dim, *reversed(hidden), self.lik.out_features(x_dim)])

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return self.lik.distribution(self.decoder(z))

    def base(self, x: torch.Tensor) -> tuple[dist.TorchDistribution, torch.Tensor]:
        """The Gaussian :math:`q(z^{(0)}|x)` and the context :math:`h_\\phi(x)`."""
        h = self.context(x)
        loc, raw = self.head(h).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1), h

    def transforms(self, h: torch.Tensor) -> list:
        """The flow steps conditioned on ``h``, with the order reversed between them."""
        flip = T.Permute(torch.arange(self.latent_dim - 1, -1, -1, device=h.device))
        steps: list = []
        for i, flow in enumerate(self.flows):
            steps += ([flip] if i else []) + [flow.condition(h)]
        return steps

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        base, h = self.base(x)
        return dist.TransformedDistribution(base, self.transforms(h))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The base mean pushed through the flow (a flow has no closed-form mean)."""
        base, h = self.base(x)
        z = base.mean
        for t in self.transforms(h):
            z = t(z)
        return z


MODEL = IAFVAE
