"""The multiply importance-weighted bound (MIWAE, Rainforth et al. 2018) as a Pyro ELBO.

For each example :math:`n`, :math:`M` independent groups of :math:`K` guide draws
:math:`z_{mkn} \\sim q(z \\mid x_n)` with log-weights :math:`w_{mkn} = \\log p(x_n, z_{mkn}) -
\\log q(z_{mkn} \\mid x_n)` (their eq. 8):

.. math::

    \\mathcal{L}_{M,K} = \\sum_n \\frac1M \\sum_{m=1}^M \\Big[\\operatorname{logsumexp}_k
        w_{mkn} - \\log K\\Big],

the IWAE bound with :math:`K` draws averaged over :math:`M` independent estimates. At equal
cost :math:`MK`, a larger :math:`M` gives the encoder's gradient a better signal-to-noise
ratio (their Theorem 1: the IWAE encoder's SNR falls as :math:`O(1/\\sqrt K)`) at the price
of a looser bound. :math:`M = 1` is the IWAE bound, :math:`K = 1` the ELBO averaged over
:math:`M` draws. The draws are those of :class:`~ppl_vae.infer.iwae.IWAE_ELBO` with
:math:`MK` particles (one vectorised plate), grouped ``(M, K)``: only
:meth:`~ppl_vae.infer.iwae.IWAE_ELBO.bounds` differs, so the plate rule, global sites and the
score-function term for non-reparameterised sites are IWAE's.

Example::

    >>> import torch
    >>> from ppl_vae.models.vae import VAE
    >>> vae = VAE(x_dim=64, latent_dim=2)
    >>> MIWAE_ELBO(num_particles=4, groups=2)(vae.model, vae.guide)(torch.rand(8, 64)).shape
    torch.Size([])
"""

from __future__ import annotations

import math

import torch

from ppl_vae.infer.iwae import IWAE_ELBO


class MIWAE_ELBO(IWAE_ELBO):  # noqa: N801 -- named like Pyro's Trace_ELBO
    """:math:`\\mathcal{L}_{M,K}` with ``num_particles`` = :math:`K` draws per group and
    ``groups`` = :math:`M` groups per example."""

    def __init__(
        self,
        num_particles: int = 8,
        groups: int = 8,
        max_plate_nesting: int = 1,
        data_plate: str = "data",
    ):
        if int(groups) < 1 or int(num_particles) < 1:
            raise ValueError(f"MIWAE needs M, K >= 1, got M={groups}, K={num_particles}")
        self.groups, self.per_group = int(groups), int(num_particles)
        super().__init__(self.groups * self.per_group, max_plate_nesting, data_plate)

    def bounds(self, w: torch.Tensor) -> torch.Tensor:
        """``(M, B)``: each group's IWAE bound with :math:`K` draws."""
        w = w.reshape(self.groups, self.per_group, w.shape[-1])
        return w.logsumexp(1) - math.log(self.per_group)


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> MIWAE_ELBO:
    """The objective ``--objective miwae`` trains: ``--miwae-groups`` M groups of
    ``--num-particles`` K draws."""
    return MIWAE_ELBO(config.num_particles, config.miwae_groups, max_plate_nesting)
