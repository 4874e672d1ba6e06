"""The shared shape of every model in the suite: a generative program and its guide.

A subclass states three distributions, each with one event dimension:

- :meth:`Autoencoder.prior` -- :math:`p(z)`,
- :meth:`Autoencoder.likelihood` -- :math:`p(x \\mid z)`,
- :meth:`Autoencoder.posterior` -- :math:`q(z \\mid x)` (a ``Delta`` for the
  deterministic autoencoders).

The base class turns them into the two Pyro programs SVI fits,

.. math::

    \\text{model}: \\; z_n \\sim p(z),\\; x_n \\sim p(x \\mid z_n) \\qquad
    \\text{guide}: \\; z_n \\sim q(z \\mid x_n), \\qquad n = 1..N \\text{ (a plate)},

so the ELBO :math:`\\mathbb{E}_q[\\log p(x|z)] - \\mathrm{KL}(q(z|x)\\|p(z))` is the
same objective for every model. Nothing here is special to the engine: it trains these
two programs exactly as it trains a user's (beta is the trainer's, applied to the latent
sites of both programs; see :mod:`ppl_vae.infer.latent_scale`).
A model with ``has_prior = False`` masks the prior term out (``poutine.scale`` refuses 0):
with a ``Delta`` guide the ELBO is then the reconstruction log-likelihood alone.

Example::

    >>> from ppl_vae.models.vae import VAE
    >>> vae = VAE(x_dim=64, latent_dim=2)
    >>> vae.decode(vae.prior().sample([5])).shape
    torch.Size([5, 64])
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.likelihoods import Likelihood
from pyro import poutine
from pyro.nn import PyroModule

LATENT = "z"


OBSERVED = "x"


class Autoencoder(PyroModule):
    """Base class: subclasses implement ``likelihood`` and ``posterior`` (and may
    override ``prior``); ``model``, ``guide``, ``encode``, ``decode`` and ``generate``
    come from here."""

    #: False for autoencoders without a latent prior term (the prior site is masked).
    has_prior: bool = True
    #: The observation model, when the subclass uses one of ``ppl_vae.models.blocks.likelihoods``.
    lik: Likelihood | None = None

    def __init__(self, x_dim: int, latent_dim: int):
        super().__init__()
        self.x_dim = int(x_dim)
        self.latent_dim = int(latent_dim)
        # Anchors device and dtype for the prior's parameters.
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    # -- the three distributions ---------------------------------------------------
    def prior(self) -> dist.TorchDistribution:
        """:math:`p(z) = \\mathcal{N}(0, I)`."""
        loc = self._zero.expand(self.latent_dim)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    # -- the two Pyro programs ------------------------------------------------------
    def model(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`z \\sim p(z)`, :math:`x \\sim p(x|z)`, one draw per row of ``x``."""
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.mask(mask=self.has_prior):
                z = pyro.sample(LATENT, self.prior().expand([x.shape[0]]))
            return pyro.sample(OBSERVED, self.likelihood(z), obs=x)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`z \\sim q(z|x)`."""
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample(LATENT, self.posterior(self.guide_input(x)))

    def guide_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the guide encodes; a denoising autoencoder corrupts ``x`` here."""
        return x

    # -- deterministic views ------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean :math:`\\mathbb{E}_q[z|x]` (the code of a deterministic AE)."""
        return self.posterior(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of :math:`p(x|z)`: pixel probabilities or Gaussian means."""
        return self.likelihood(z).mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def generate(self, n: int) -> torch.Tensor:
        """Generation skips the encoder: :math:`z \\sim p(z)`, then the decoder mean."""
        return self.decode(self.prior().sample([n]))

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`~ppl_vae.errors.UserError` when ``x`` does not fit the model."""
        from ppl_vae.errors import UserError

        if x.ndim != 2 or x.shape[1] != self.x_dim:
            raise UserError(
                f"{type(self).__name__} expects rows of {self.x_dim} values, got data of shape "
                f"{tuple(x.shape)}"
            )
        if self.lik is not None:
            self.lik.check(x)
