"""Probabilistic PCA (Tipping & Bishop 1999): a linear-Gaussian latent variable model.

Generative story, for each example :math:`n`:

.. math::

    z_n \\sim \\mathcal{N}(0, I_d), \\qquad
    x_n \\mid z_n \\sim \\mathcal{N}(W z_n + \\mu, \\sigma^2 I_D),

so the marginal is :math:`x_n \\sim \\mathcal{N}(\\mu, C)` with :math:`C = W W^\\top +
\\sigma^2 I` and the exact posterior is Gaussian,
:math:`z \\mid x \\sim \\mathcal{N}(M^{-1} W^\\top (x - \\mu),\\, \\sigma^2 M^{-1})`,
:math:`M = W^\\top W + \\sigma^2 I`.

Guide: :math:`q(z|x) = \\mathcal{N}(A (x - \\mu), \\operatorname{diag} s^2)` -- linear,
like the exact posterior, with a covariance that does not depend on :math:`x`. At the maximum-
likelihood solution :math:`W^\\top W` is diagonal, so the family contains the exact
posterior and the ELBO can reach :math:`\\log p(x)`: the suite's correctness oracle.

Example::

    >>> m = PPCA(x_dim=5, latent_dim=2)
    >>> m.marginal().event_shape, m.exact_posterior(torch.zeros(3, 5)).batch_shape
    (torch.Size([5]), torch.Size([3]))
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.autoencoder import Autoencoder
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import nn


class PPCA(Autoencoder):
    """Linear Gaussian decoder with learned noise :math:`\\sigma`, linear Gaussian guide."""

    #: Analytic KL, cosine-annealed steps: within 0.03 nats of the ML test log-likelihood.
    train_defaults = dict(
        elbo="meanfield", lr=0.05, batch_size=256, lr_schedule="cosine", epochs=100
    )

    def __init__(
        self, x_dim: int, latent_dim: int = 2, init_scale: float = 1.0, init_w: float = 1.0
    ):
        super().__init__(x_dim, latent_dim)
        # Start near the data's scale: orthogonal columns of norm init_w * sqrt(x_dim), i.e.
        # entries of size ~init_w (pick it near the per-feature standard deviation), and a
        # sharp guide, std e^-2. From a small W, training is slow and can collapse into a
        # large sigma: log p(x) is flat in W's scale. The guide encodes x - mu without a
        # bias, like the exact posterior mean M^-1 W^T (x - mu).
        w = nn.init.orthogonal_(torch.empty(x_dim, latent_dim)) * (float(init_w) * x_dim**0.5)
        self.W = nn.Parameter(w)
        self.mu = nn.Parameter(torch.zeros(x_dim))
        self.sigma = PyroParam(torch.tensor(float(init_scale)), constraints.positive)
        self.enc = nn.Linear(x_dim, latent_dim, bias=False)
        self.log_s = nn.Parameter(torch.full((latent_dim,), -2.0))

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        loc = z @ self.W.T + self.mu
        return dist.Normal(loc, self.sigma.expand(loc.shape)).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc = self.enc(x - self.mu)
        return dist.Normal(loc, self.log_s.exp().expand(loc.shape)).to_event(1)

    # -- closed forms ---------------------------------------------------------------
    def marginal(self) -> dist.MultivariateNormal:
        """The marginal :math:`p(x) = \\mathcal{N}(\\mu, W W^\\top + \\sigma^2 I)`."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.x_dim, device=self.W.device)
        return dist.MultivariateNormal(self.mu, covariance_matrix=cov)

    def exact_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """:math:`p(z|x) = \\mathcal{N}(M^{-1} W^\\top (x-\\mu), \\sigma^2 M^{-1})`."""
        s2 = self.sigma**2
        m = self.W.T @ self.W + s2 * torch.eye(self.latent_dim, device=self.W.device)
        m_inv = torch.linalg.inv(m)
        loc = (x - self.mu) @ self.W @ m_inv.T
        return dist.MultivariateNormal(
            loc, covariance_matrix=(s2 * m_inv).expand(*loc.shape[:-1], -1, -1)
        )


def maximum_likelihood(
    x: torch.Tensor, latent_dim: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Closed-form maximum-likelihood PPCA (Tipping & Bishop 1999, eqs. 7-8):
    :math:`\\mu` = the sample mean, :math:`\\sigma^2` = the mean of the discarded
    eigenvalues of the sample covariance, :math:`W = U_d (\\Lambda_d - \\sigma^2 I)^{1/2}`."""
    x = x.double()
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / x.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = float(evals[latent_dim:].mean())
    w = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp_min(0).sqrt()
    return mu, w, sigma2


def max_log_likelihood(x: torch.Tensor, latent_dim: int) -> float:
    """Mean per-example :math:`\\log p(x)` at the maximum-likelihood parameters, in nats:
    :math:`-\\tfrac12 [D \\log 2\\pi + \\log|C| + \\operatorname{tr}(C^{-1} S)]`."""
    mu, w, sigma2 = maximum_likelihood(x, latent_dim)
    d = x.shape[1]
    c = w @ w.T + sigma2 * torch.eye(d, dtype=torch.float64)
    xc = x.double() - mu
    s = xc.T @ xc / x.shape[0]
    _, logdet = torch.linalg.slogdet(c)
    return float(
        -0.5 * (d * math.log(2 * math.pi) + logdet + torch.trace(torch.linalg.solve(c, s)))
    )


MODEL = PPCA
