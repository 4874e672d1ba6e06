"""The two-level VAE with a VampPrior over its top layer (Tomczak & Welling 2018's best).

"HVAE (L=2) + VampPrior", the paper's best MLP model, as the paper writes it: a two-level
VAE whose top prior is the guide's own mixture at :math:`K` learned pseudo-inputs.

Generative story (the path of :mod:`ppl_vae.models.blocks.hierarchy`):

.. math::

    z_2 \\sim p_\\lambda(z_2) = \\frac1K \\sum_{k=1}^K q_\\phi(z_2 \\mid u_k), \\qquad
    z_1 \\mid z_2 \\sim \\mathcal{N}\\big(\\mu_\\theta(z_2), \\operatorname{diag}
        \\sigma_\\theta(z_2)^2\\big), \\qquad x \\mid z_1 \\sim p_\\theta(x \\mid z_1).

Guide, the paper's top-down :math:`q(z_2|x)\\, q(z_1|z_2, x)`: both diagonal Gaussians from
MLPs, the second reading :math:`x` and :math:`z_2` side by side. Because :math:`q(z_2|x)`
depends on :math:`x` alone, the VampPrior :math:`p(z_2)` is that same network at the
pseudo-inputs :math:`u_k` (shaped like data, initialised uniform in [0, 1], learned with
everything else): a ``MixtureSameFamily`` of K diagonal Gaussians with equal weights. The
optimum: the ELBO's prior term is maximised by the aggregate posterior :math:`\\frac1N
\\sum_n q(z_2|x_n)`, and the VampPrior is that mixture with :math:`K \\ll N` learned points
in place of the N data (the paper's motivation); the KL terms have no closed form and come
from the traces. The paper reports -81.24 nats (MLP, dynamically binarised MNIST, 60k digits)
against -84.75 for its one-level VAE: the literature's gap this model is the suite's
candidate for (``benchmarks/hierarchy_gap.py`` measures it on mnist-5k).

Example::

    >>> import torch
    >>> m = HVampVAE(x_dim=64, latent_dim=4, top_dim=2, hidden=(32,), num_pseudo=10)
    >>> p = m.prior()
    >>> p.batch_shape, p.event_shape, m.generate(3).shape
    (torch.Size([]), torch.Size([2]), torch.Size([3, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.hierarchy import Draw, TwoLevel, normal
from ppl_vae.models.blocks.nets import GaussianHead
from torch import nn


class HVampVAE(TwoLevel):
    """Two levels, the guide :math:`q(z_2|x) q(z_1|x, z_2)`, a VampPrior over :math:`z_2`."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 32,
        top_dim: int = 16,
        hidden: Sequence[int] | str = (256,),
        top_hidden: Sequence[int] | str = (128,),
        likelihood: str = "bernoulli",
        num_pseudo: int = 100,
    ):
        super().__init__(x_dim, latent_dim, top_dim, hidden, top_hidden, likelihood)
        self.q_z2 = GaussianHead(x_dim, self.hidden, self.top_dim)
        self.q_z1 = GaussianHead(x_dim + self.top_dim, self.hidden, self.latent_dim)
        self.pseudo_inputs = nn.Parameter(torch.rand(int(num_pseudo), x_dim))

    def prior(self) -> dist.TorchDistribution:
        """:math:`p(z_2) = \\frac1K \\sum_k q(z_2|u_k)`."""
        loc, scale = self.q_z2(self.pseudo_inputs)
        mixing = dist.Categorical(logits=torch.zeros_like(loc[:, 0]))
        return dist.MixtureSameFamily(mixing, dist.Normal(loc, scale).to_event(1))

    def infer(self, x: torch.Tensor, draw: Draw) -> dict[str, torch.Tensor]:
        """:math:`z_2 \\sim q(z_2|x)`, then :math:`z_1 \\sim q(z_1|x, z_2)`."""
        z2 = draw("z2", normal(self.q_z2(x)))
        xz = torch.cat([x.expand(*z2.shape[:-1], x.shape[-1]), z2], -1)
        return {"z1": draw("z1", normal(self.q_z1(xz))), "z2": z2}


MODEL = HVampVAE
