"""Two stochastic layers: the generative path the suite's hierarchical models share.

.. math::

    z_2 \\sim p(z_2), \\qquad
    z_1 \\mid z_2 \\sim \\mathcal{N}\\big(\\mu_\\theta(z_2), \\operatorname{diag}
        \\sigma_\\theta(z_2)^2\\big), \\qquad
    x \\mid z_1 \\sim p_\\theta(x \\mid z_1),

with :math:`p(z_2) = \\mathcal{N}(0, I)` unless a subclass overrides :meth:`TwoLevel.prior`.
``latent_dim`` is :math:`d_1` (the layer next to the data), ``top_dim`` :math:`d_2`. A
subclass states its inference network in :meth:`TwoLevel.infer`, once, with a ``draw``
callback: the guide passes ``pyro.sample``, :meth:`TwoLevel.encode` the distributions' means.
The ELBO then has two KL-like terms, both estimated from the traces:

.. math::

    \\mathcal{L}(x) = \\mathbb{E}_{q(z_1, z_2|x)}\\big[\\log p(x|z_1) + \\log p(z_1|z_2)
        + \\log p(z_2) - \\log q(z_1, z_2 \\mid x)\\big].

:func:`precision_merge` is the Ladder VAE's combination of two Gaussians (the normalised
product of their densities).

Example::

    >>> loc, scale = precision_merge(torch.zeros(1), torch.ones(1), torch.ones(1), torch.ones(1))
    >>> loc.item(), round(scale.item() ** 2, 6)
    (0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from ppl_vae.models.blocks import likelihoods
from ppl_vae.models.blocks.autoencoder import Autoencoder
from ppl_vae.models.blocks.nets import GaussianHead, mlp, parse_hidden

Draw = Callable[[str, dist.TorchDistribution], torch.Tensor]


def normal(loc_scale: tuple[torch.Tensor, torch.Tensor]) -> dist.TorchDistribution:
    """A diagonal Gaussian with one event dimension from ``(loc, scale)``."""
    return dist.Normal(*loc_scale).to_event(1)


def precision_merge(
    loc_a: torch.Tensor, scale_a: torch.Tensor, loc_b: torch.Tensor, scale_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\sigma^{-2} = \\sigma_a^{-2} + \\sigma_b^{-2}`, :math:`\\mu = (\\mu_a
    \\sigma_a^{-2} + \\mu_b \\sigma_b^{-2}) \\sigma^2` (Sonderby et al. 2016, eq. 18-19)."""
    prec_a, prec_b = scale_a.pow(-2), scale_b.pow(-2)
    precision = prec_a + prec_b
    return (loc_a * prec_a + loc_b * prec_b) / precision, precision.rsqrt()


class TwoLevel(Autoencoder):
    """The generative path :math:`p(z_2) p(z_1|z_2) p(x|z_1)`: ``hidden`` for the nets
    between :math:`x` and :math:`z_1`, ``top_hidden`` between :math:`z_1` and :math:`z_2`."""

    #: mnist-5k: batches of 100, a linear KL warm-up over 400 steps (the papers warm up too).
    train_defaults = {"batch_size": 100, "beta_schedule": "linear", "warmup_steps": 400}

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 32,
        top_dim: int = 16,
        hidden: Sequence[int] | str = (256,),
        top_hidden: Sequence[int] | str = (128,),
        likelihood: str = "bernoulli",
    ):
        super().__init__(x_dim, latent_dim)
        self.top_dim = int(top_dim)
        self.hidden, self.top_hidden = parse_hidden(hidden), parse_hidden(top_hidden)
        self.lik = likelihoods.make(likelihood)
        self.top_down = GaussianHead(self.top_dim, self.top_hidden, self.latent_dim)
        out = self.lik.out_features(x_dim)
        self.decoder = mlp([self.latent_dim, *reversed(self.hidden), out])

    def prior(self) -> dist.TorchDistribution:
        """:math:`p(z_2) = \\mathcal{N}(0, I_{d_2})`."""
        loc = self._zero.expand(self.top_dim)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def conditional(self, z2: torch.Tensor) -> dist.TorchDistribution:
        """:math:`p(z_1 \\mid z_2)`."""
        return normal(self.top_down(z2))

    def likelihood(self, z1: torch.Tensor) -> dist.TorchDistribution:
        return self.lik.distribution(self.decoder(z1))

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`z_2 \\sim p(z_2)`, :math:`z_1 \\sim p(z_1|z_2)`, :math:`x \\sim p(x|z_1)`."""
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.prior().expand([x.shape[0]]))
            z1 = pyro.sample("z1", self.conditional(z2))
            return pyro.sample("x", self.likelihood(z1), obs=x)

    def infer(self, x: torch.Tensor, draw: Draw) -> dict[str, torch.Tensor]:
        """The inference network: calls ``draw(name, q)`` for ``z1`` and ``z2``."""
        raise NotImplementedError

    def guide(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with pyro.plate("data", x.shape[0], dim=-1):
            return self.infer(x, pyro.sample)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The guide run on its means: ``[z1, z2]`` side by side, ``(N, d1 + d2)``."""
        codes = self.infer(x, lambda name, q: q.mean)
        return torch.cat([codes["z1"], codes["z2"]], -1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.infer(x, lambda name, q: q.mean)["z1"])

    def generate(self, n: int) -> torch.Tensor:
        """Ancestral sampling down both layers, then the decoder mean."""
        return self.decode(self.conditional(self.prior().sample([n])).sample())
