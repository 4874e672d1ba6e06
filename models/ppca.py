"""Probabilistic PCA (Tipping & Bishop 1999): a linear-Gaussian latent variable model.

Generative story, for each example :math:`n`:

.. math::

    z_n \\sim \\mathcal{N}(0, I_d), \\qquad
    x_n \\mid z_n \\sim \\mathcal{N}(W z_n + \\mu, \\sigma^2 I_D),

so :math:`x_n \\sim \\mathcal{N}(\\mu, W W^\\top + \\sigma^2 I)` and the exact posterior
is :math:`\\mathcal{N}(M^{-1} W^\\top (x - \\mu), \\sigma^2 M^{-1})`, :math:`M = W^\\top W +
\\sigma^2 I`.

Guide: :math:`q(z|x) = \\mathcal{N}(B\\, W^{+} (x - \\mu), \\operatorname{diag} s^2)`. At the
optimum :math:`W^\\top W` is diagonal, so :math:`B = M^{-1} W^\\top W` makes it the exact
posterior and the ELBO reaches :math:`\\log p(x)`: the suite's oracle. Through the decoder's
own pseudo-inverse the guide follows :math:`W`'s scale (a free encoder must shrink as :math:`W`
grows, a valley SVI crosses slowly). :math:`W = s W_u`, :math:`\\mu = c + s \\mu_u`,
:math:`\\sigma = s \\sigma_u` with :math:`c, s` the data's mean and scale
(:meth:`PPCA.init_from_data`), so the steps suit data of any scale.

Example::

    >>> m = PPCA(x_dim=5, latent_dim=2)
    >>> m.marginal().event_shape, m.exact_posterior(torch.zeros(3, 5)).batch_shape
    (torch.Size([5]), torch.Size([3]))
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.autoencoder import Autoencoder
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import nn

RIDGE = 1e-4  # keeps W^T W invertible (in the data's units); B absorbs it


class PPCA(Autoencoder):
    """Linear Gaussian decoder with learned noise :math:`\\sigma`, linear Gaussian guide."""

    #: Full-batch L-BFGS, 16 draws per row fixed for the run (a deterministic objective):
    #: within 0.02 nats of the closed-form maximum likelihood on public tables, random splits
    #: (tests/models). Near-flat directions (W's rotations, a column beyond the data's rank)
    #: may keep the gradient above ``grad_tolerance`` until the 20 epochs run out.
    train_defaults = dict(elbo="meanfield", optimizer="lbfgs", num_particles=16, lr=1.0)
    train_defaults.update(batch_size=65536, epochs=20, grad_tolerance=1e-3)
    W = property(lambda self: self.scale * self.W_unit)
    mu = property(lambda self: self.center + self.scale * self.mu_unit)
    sigma = property(lambda self: self.scale * self.sigma_unit)

    def __init__(self, x_dim: int, latent_dim: int = 2, init_scale: float = 1.0):
        super().__init__(x_dim, latent_dim)
        self.register_buffer("center", torch.zeros(x_dim))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("data_seen", torch.zeros((), dtype=torch.bool))
        # Until data is seen: orthogonal columns, entries ~1, sigma = init_scale, random guide.
        w = nn.init.orthogonal_(torch.empty(x_dim, latent_dim)) * x_dim**0.5
        self.W_unit, self.mu_unit = nn.Parameter(w), nn.Parameter(torch.zeros(x_dim))
        self.sigma_unit = PyroParam(torch.tensor(float(init_scale)), constraints.positive)
        self.B = nn.Parameter(nn.init.uniform_(torch.empty(latent_dim, latent_dim), -1, 1))
        self.log_s = nn.Parameter(torch.full((latent_dim,), -2.0))

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        loc = z @ self.W.T + self.mu
        return dist.Normal(loc, self.sigma.expand(loc.shape)).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        w, eye = self.W_unit, torch.eye(self.latent_dim).to(self.W_unit)
        pinv = torch.linalg.solve(w.T @ w + RIDGE * eye, w.T)  # W+, in the data's units
        loc = ((x - self.mu) / self.scale) @ pinv.T @ self.B.T
        return dist.Normal(loc, self.log_s.exp().expand(loc.shape)).to_event(1)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Before the first step (:func:`~ppl_vae.infer.trainer.fit`): c, s from ``x``, unit
        random columns, sigma = s, the guide exact for that start."""
        if not self.data_seen:
            self.center.copy_(x.mean(0))
            self.scale.fill_(float(x.var(0).mean().sqrt()) or 1.0)
            self.W_unit.div_(self.W_unit.norm(dim=0))
            self.mu_unit.zero_()
            self.sigma_unit = torch.ones(()).to(self.scale)
            self.set_exact_guide()
            self.data_seen.fill_(True)

    @torch.no_grad()
    def set_parameters(self, W: torch.Tensor, mu: torch.Tensor, sigma: float) -> None:
        """The decoder set to ``W``, ``mu`` and ``sigma``, given in the data's units."""
        self.W_unit.copy_(W / self.scale)
        self.mu_unit.copy_((mu - self.center) / self.scale)
        self.sigma_unit = torch.as_tensor(sigma).to(self.scale) / self.scale

    @torch.no_grad()
    def set_exact_guide(self) -> None:
        """The guide at the exact posterior's mean map and marginal sds for this decoder."""
        w, eye, s2 = self.W_unit, torch.eye(self.latent_dim).to(self.W_unit), self.sigma_unit**2
        m_inv = torch.linalg.inv(w.T @ w + s2 * eye)
        self.B.copy_(m_inv @ (w.T @ w + RIDGE * eye))
        self.log_s.copy_(0.5 * torch.log(s2 * m_inv.diagonal()))

    def marginal(self) -> dist.MultivariateNormal:
        """The marginal :math:`p(x) = \\mathcal{N}(\\mu, W W^\\top + \\sigma^2 I)`."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.x_dim, device=self.W.device)
        return dist.MultivariateNormal(self.mu, covariance_matrix=cov)

    def exact_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """:math:`p(z|x) = \\mathcal{N}(M^{-1} W^\\top (x-\\mu), \\sigma^2 M^{-1})`."""
        w, s2 = self.W, self.sigma**2
        m_inv = torch.linalg.inv(w.T @ w + s2 * torch.eye(self.latent_dim).to(w))
        loc = (x - self.mu) @ w @ m_inv.T
        cov = (s2 * m_inv).expand(*loc.shape[:-1], -1, -1)
        return dist.MultivariateNormal(loc, covariance_matrix=cov)


def maximum_likelihood(
    x: torch.Tensor, latent_dim: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Tipping & Bishop's eqs. 7-8: :math:`\\mu` the mean, :math:`\\sigma^2` the mean discarded
    eigenvalue of the covariance, :math:`W = U_d (\\Lambda_d - \\sigma^2 I)^{1/2}`."""
    x = x.double()
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / x.shape[0]
    evals, evecs = (t.flip(-1) for t in torch.linalg.eigh(cov))
    sigma2 = float(evals[latent_dim:].mean())
    w = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp_min(0).sqrt()
    return mu, w, sigma2


def max_log_likelihood(x: torch.Tensor, latent_dim: int) -> float:
    """Mean :math:`\\log p(x)` of ``x`` (nats) at the maximum-likelihood parameters of ``x``."""
    mu, w, sigma2 = maximum_likelihood(x, latent_dim)
    c = w @ w.T + sigma2 * torch.eye(x.shape[1], dtype=torch.float64)
    return float(dist.MultivariateNormal(mu, c).log_prob(x.double()).mean())


MODEL = PPCA
