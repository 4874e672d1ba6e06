"""The training objective as an ``nn.Module``: a Pyro ELBO over a program pair.

:class:`Objective` holds a :class:`~ppl_vae.programs.Programs` pair (so its
``parameters()`` are every parameter the programs use) and a Pyro ELBO; its ``forward``
is the differentiable negative ELBO of a batch, summed over the batch,

.. math::

    -\\mathcal{L}_\\beta = -\\textstyle\\sum_n \\mathbb{E}_q[\\log p(x_n \\mid z)]
        + \\beta \\sum_n \\mathbb{E}_q[\\log q(z \\mid x_n) - \\log p(z)],

with beta applied by :class:`~ppl_vae.latent_scale.LatentScaleMessenger` to the latent
sites of *both* programs (any program, no ``beta`` argument needed). This module is what
one ``torch.optim`` optimizer steps and what ``DistributedDataParallel`` wraps.

ELBOs: ``trace`` (Pyro's ``Trace_ELBO``), ``meanfield`` (``TraceMeanField_ELBO``: the KL
analytically where ``kl_divergence`` knows the pair) and ``enum`` (``TraceEnum_ELBO``: sums
out discrete latent sites marked for enumeration, as the semi-supervised VAE does).

Example::

    >>> import torch
    >>> from ppl_vae.programs import from_object
    >>> from ppl_vae.models.vae import VAE
    >>> x = torch.rand(8, 64)
    >>> loss = Objective(from_object(VAE(x_dim=64, latent_dim=2), x), make_elbo())
    >>> float(loss(x, beta=2.0).detach()) > float(loss(x, beta=1.0).detach()) > 0
    True
"""

from __future__ import annotations

import pyro.infer
import torch
from torch import nn

from ppl_vae.errors import UserError
from ppl_vae.latent_scale import LatentScaleMessenger
from ppl_vae.programs import Programs

ELBOS = {
    "trace": pyro.infer.Trace_ELBO,
    "meanfield": pyro.infer.TraceMeanField_ELBO,
    "enum": pyro.infer.TraceEnum_ELBO,
}


def make_elbo(kind: str = "trace", num_particles: int = 1, max_plate_nesting: int = 1):
    """A Pyro ELBO by name (see the module docstring); particles are vectorised."""
    if kind not in ELBOS:
        raise UserError(f"unknown ELBO {kind!r}; choose one of {', '.join(ELBOS)}")
    return ELBOS[kind](
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


def scaled(pair: Programs, beta: float):
    """The pair's ``(model, guide)`` with every latent site scaled by ``beta``."""
    if beta == 1.0:
        return pair.model, pair.guide
    return (
        LatentScaleMessenger(beta, pair.latent_sites)(pair.model),
        LatentScaleMessenger(beta, pair.latent_sites)(pair.guide),
    )


class Objective(nn.Module):
    """``loss(*args, beta=1.0)``: the negative beta-ELBO of the pair on one batch."""

    def __init__(self, pair: Programs, elbo: pyro.infer.ELBO):
        super().__init__()
        self.pair = pair
        self.elbo = elbo

    def forward(self, *args: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        model, guide = scaled(self.pair, beta)
        with self.pair.scope():
            return self.elbo.differentiable_loss(model, guide, *args)
