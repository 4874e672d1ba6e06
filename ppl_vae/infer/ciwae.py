"""The combination importance-weighted bound (CIWAE, Rainforth et al. 2018) as a Pyro ELBO.

With :math:`K` guide draws :math:`z_{kn} \\sim q(z \\mid x_n)` and log-weights
:math:`w_{kn} = \\log p(x_n, z_{kn}) - \\log q(z_{kn} \\mid x_n)` (their eq. 7),

.. math::

    \\mathcal{L}_{\\beta,K} = \\sum_n \\Big[\\beta\\, \\frac1K \\sum_k w_{kn}
        + (1 - \\beta) \\Big(\\operatorname{logsumexp}_k w_{kn} - \\log K\\Big)\\Big],

a convex combination of the :math:`K`-sample ELBO and the IWAE bound on the same draws: the
ELBO term keeps the encoder's gradient signal that the IWAE term loses as :math:`K` grows.
:math:`\\beta = 1` is the ELBO averaged over :math:`K` draws, :math:`\\beta = 0` the IWAE
bound; every :math:`\\beta \\in [0, 1]` is a lower bound on :math:`\\log p(x)`. This
:math:`\\beta` (``--ciwae-beta``) is not the beta-VAE's weight on the KL. The draws and the
plate rule are :class:`~ppl_vae.infer.iwae.IWAE_ELBO`'s; only the per-example bound differs.

Example::

    >>> import torch
    >>> from ppl_vae.models.vae import VAE
    >>> vae = VAE(x_dim=64, latent_dim=2)
    >>> CIWAE_ELBO(num_particles=4, beta=0.5)(vae.model, vae.guide)(torch.rand(8, 64)).shape
    torch.Size([])
"""

from __future__ import annotations

import math

import torch

from ppl_vae.infer.iwae import IWAE_ELBO


class CIWAE_ELBO(IWAE_ELBO):  # noqa: N801 -- named like Pyro's Trace_ELBO
    """:math:`\\mathcal{L}_{\\beta,K}` with ``num_particles`` = :math:`K`, ``beta`` the
    ELBO's share."""

    def __init__(
        self,
        num_particles: int = 2,
        beta: float = 0.5,
        max_plate_nesting: int = 1,
        data_plate: str = "data",
    ):
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"CIWAE's beta is a weight in [0, 1], got {beta}")
        super().__init__(num_particles, max_plate_nesting, data_plate)
        self.beta = float(beta)

    def bounds(self, w: torch.Tensor) -> torch.Tensor:
        iwae = w.logsumexp(0) - math.log(self.num_particles)
        return (self.beta * w.mean(0) + (1.0 - self.beta) * iwae).unsqueeze(0)


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> CIWAE_ELBO:
    """The objective ``--objective ciwae`` trains: ``--num-particles`` K draws, the ELBO's
    share ``--ciwae-beta``."""
    return CIWAE_ELBO(config.num_particles, config.ciwae_beta, max_plate_nesting)
