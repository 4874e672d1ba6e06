"""The training objective as an ``nn.Module``: Pyro's ELBO over a model's two programs.

``Trace_ELBO()(model, guide)`` returns Pyro's ``ELBOModule``, whose ``forward`` is the
differentiable negative ELBO and whose ``parameters()`` are the program's parameters.
That module is what one ``torch.optim`` optimizer steps and what
``DistributedDataParallel`` wraps.

Example::

    >>> import torch
    >>> from models.vae import VAE
    >>> vae = VAE(x_dim=64, latent_dim=2)
    >>> loss = elbo_module(vae)
    >>> float(loss(torch.rand(8, 64)).detach()) > 0
    True
"""

from __future__ import annotations

import pyro.infer
from torch import nn

from ppl_vae.errors import UserError

ELBOS = {"trace": pyro.infer.Trace_ELBO, "meanfield": pyro.infer.TraceMeanField_ELBO}


class Program(nn.Module):
    """One of a PyroModule's programs (``"model"`` or ``"guide"``) as an ``nn.Module``."""

    def __init__(self, owner: nn.Module, method: str):
        super().__init__()
        self.owner = owner
        self.method = method

    def forward(self, *args, **kwargs):
        return getattr(self.owner, self.method)(*args, **kwargs)


def make_elbo(kind: str = "trace", num_particles: int = 1) -> pyro.infer.ELBO:
    """``trace`` (:class:`~pyro.infer.Trace_ELBO`) or ``meanfield`` (analytic KL)."""
    if kind not in ELBOS:
        raise UserError(f"unknown ELBO {kind!r}; choose one of {', '.join(ELBOS)}")
    return ELBOS[kind](
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )


def elbo_module(module: nn.Module, kind: str = "trace", num_particles: int = 1) -> nn.Module:
    """The negative ELBO of ``module.model``/``module.guide`` as a module: ``loss(x, beta=1)``."""
    return make_elbo(kind, num_particles)(Program(module, "model"), Program(module, "guide"))
