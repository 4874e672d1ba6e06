"""The VAE with a planar or radial flow guide (Rezende & Mohamed 2015), conditioned on x.

Generative story: the VAE's, :math:`z_n \\sim \\mathcal{N}(0, I)`,
:math:`x_n \\mid z_n \\sim p_\\theta(x \\mid z_n)`. The guide pushes a diagonal Gaussian
:math:`z^{(0)} \\sim \\mathcal{N}(\\mu_\\phi(x), \\operatorname{diag}\\sigma_\\phi(x)^2)` through
:math:`K` (``flow_length``) steps whose parameters a hypernetwork reads off the encoder's
context :math:`h = h_\\phi(x)` (their eqs. 10-14; pythae's VAE_LinNF keeps them global):

.. math::

    \\text{planar: } f(z) = z + \\hat u \\tanh(w^\\top z + b), \\qquad
    \\log\\lvert\\det J\\rvert = \\log\\lvert 1 + (1 - \\tanh^2(w^\\top z + b))\\, w^\\top \\hat u
    \\rvert,

.. math::

    \\text{radial: } f(z) = z + \\beta h(\\alpha, r)(z - z_0), \\quad
    h = \\frac{1}{\\alpha + r}, \\; r = \\lVert z - z_0 \\rVert, \\quad
    \\log\\lvert\\det J\\rvert = (D - 1)\\log(1 + \\beta h) + \\log(1 + \\beta h - \\beta h^2 r),

and :math:`\\log q(z^{(K)}|x) = \\log \\mathcal{N}(z^{(0)}) - \\sum_k \\log\\lvert\\det
J_k\\rvert`. A step is invertible only when :math:`w^\\top \\hat u \\ge -1` (planar) or
:math:`\\beta \\ge -\\alpha` (radial); otherwise the determinant changes sign and the ELBO
is no longer a bound. Pyro's ``ConditionalPlanar`` and ``ConditionalRadial`` enforce both
(:math:`\\hat u = u + (\\operatorname{softplus}(w^\\top u) - 1 - w^\\top u)\\, w / \\lVert w
\\rVert^2`; :math:`\\alpha = \\operatorname{softplus}(\\alpha')`, :math:`\\beta = -\\alpha +
\\operatorname{softplus}(\\beta')`); :meth:`NFVAE.margins` reads both off trained weights.
:mod:`~ppl_vae.models.blocks.flows` adds their inverses, so :math:`q` scores any point.

Example::

    >>> m = NFVAE(x_dim=64, latent_dim=2, hidden=(32,), flow="radial", flow_length=3)
    >>> q = m.posterior(torch.rand(4, 64))
    >>> z = q.rsample()
    >>> z.shape, q.log_prob(z).shape, bool((m.margins(torch.rand(4, 64)) >= 0).all())
    (torch.Size([4, 2]), torch.Size([4]), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from ppl_vae.models.blocks import flows, likelihoods
from ppl_vae.models.blocks.autoencoder import Autoencoder
from ppl_vae.models.blocks.nets import mlp, parse_hidden
from torch import nn

from ppl_vae.errors import UserError

FLOWS = {"planar": flows.conditional_planar, "radial": flows.conditional_radial}


class NFVAE(Autoencoder):
    """MLP encoder giving a context and a Gaussian base, ``flow_length`` conditional planar
    or radial steps (``flow``), each with a hypernetwork of one ``flow_hidden`` layer."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
        flow: str = "planar",
        flow_length: int = 10,
        flow_hidden: int = 64,
    ):
        super().__init__(x_dim, latent_dim)
        if flow not in FLOWS or int(flow_length) < 1:
            raise UserError(
                f"nf-vae takes flow=planar|radial, flow_length >= 1: {flow!r}, {flow_length}"
            )
        hidden = parse_hidden(hidden)
        context = hidden[-1] if hidden else x_dim
        self.flow = flow
        self.lik = likelihoods.make(likelihood)
        self.context = mlp([x_dim, *hidden], final=nn.ReLU()) if hidden else nn.Identity()
        self.head = nn.Linear(context, 2 * latent_dim)
        self.flows = nn.ModuleList(
            FLOWS[flow](latent_dim, context, [int(flow_hidden)]) for _ in range(int(flow_length))
        )
        self.decoder = mlp([latent_dim, *reversed(hidden), self.lik.out_features(x_dim)])

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return self.lik.distribution(self.decoder(z))

    def base(self, x: torch.Tensor) -> tuple[dist.TorchDistribution, torch.Tensor]:
        """The Gaussian :math:`q(z^{(0)}|x)` and the context :math:`h_\\phi(x)`."""
        h = self.context(x)
        loc, raw = self.head(h).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1), h

    def transforms(self, h: torch.Tensor) -> list:  # the flow steps conditioned on h
        return [flow.condition(h) for flow in self.flows]

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        base, h = self.base(x)
        return dist.TransformedDistribution(base, self.transforms(h))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The base mean pushed through the flow (a flow has no closed-form mean)."""
        base, h = self.base(x)
        return torch.distributions.ComposeTransform(self.transforms(h))(base.mean)

    def margins(self, x: torch.Tensor) -> torch.Tensor:
        """The invertibility margins per step, ``(K, B)``, all :math:`\\ge 0` for an invertible
        flow: :math:`1 + w^\\top \\hat u` (planar) or :math:`\\alpha + \\beta` (radial)."""
        out = []
        for t in self.transforms(self.context(x)):
            _, u, w = t._params()  # planar: (b, u, w); radial: (z0, alpha', beta')
            planar = self.flow == "planar"
            out.append(1 + (w * t.u_hat(u, w)).sum(-1) if planar else F.softplus(w)[..., 0])
        return torch.stack(out)  # radial: alpha + beta = softplus(beta')


MODEL = NFVAE
