"""Capacity-controlled objective (Burgess et al. 2018) as a custom ELBO over Pyro's traces.

Instead of weighting the KL term by :math:`\\beta`, the rate is pulled towards a target
capacity :math:`C` (in nats per example) that the trainer raises linearly during training:

.. math::

    \\mathcal{L}(x_{1..B}) = -\\sum_{n} \\log p(x_n \\mid z_n)
        + \\gamma\\, B\\, \\Big|\\tfrac{1}{B}\\textstyle\\sum_n
          \\mathrm{KL}(q(z \\mid x_n) \\,\\|\\, p(z)) - C\\Big|,
    \\qquad z_n \\sim q(z \\mid x_n),

    C(t) = C_{\\max} \\min(1, t / N).

The reconstruction term comes from the model trace's observed sites, the KL from its
latent sites against the guide's (analytic where ``kl_divergence`` knows the pair, a
one-sample Monte Carlo estimate :math:`\\log q - \\log p` otherwise), both unscaled, so any
``beta`` passed to the programs has no effect here. :math:`C` is a pure function of the
step (:func:`capacity`) that the trainer evaluates and passes as ``capacity=C`` to the loss
module; the model never sees a step counter.

Example::

    >>> import torch
    >>> from models.vae import VAE
    >>> loss = capacity_module(VAE(x_dim=64, latent_dim=2), gamma=100.0)
    >>> loss(torch.rand(8, 64), capacity=capacity(500, 25.0, 1000)).item() > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pyro.infer
import torch
from pyro.distributions.util import scale_and_mask
from torch import nn
from torch.distributions import kl_divergence

from ppl_vae.errors import UserError
from ppl_vae.objective import Program


def capacity(step: int, capacity_max: float = 25.0, capacity_steps: int = 10000) -> float:
    """:math:`C(t) = C_{\\max} \\min(1, t/N)`: 0 at the start, ``capacity_max`` from step
    ``capacity_steps`` on (at once when ``capacity_steps`` is 0)."""
    if capacity_steps <= 0:
        return float(capacity_max)
    return float(capacity_max) * min(1.0, step / capacity_steps)


def check(gamma: float, capacity_max: float, capacity_steps: int) -> None:
    """Raise :class:`UserError` for settings the objective cannot use."""
    if not gamma > 0:
        raise UserError(f"--gamma must be positive, got {gamma}")
    if not capacity_max >= 0:
        raise UserError(f"--capacity-max must be at least 0 nats, got {capacity_max}")
    if capacity_steps < 0:
        raise UserError(f"--capacity-steps must be at least 0, got {capacity_steps}")


def make_capacity(capacity_max: float, capacity_steps: int) -> Callable[[int], float]:
    """:func:`capacity` with its parameters bound: a function of the step alone."""
    check(1.0, capacity_max, capacity_steps)
    return partial(capacity, capacity_max=capacity_max, capacity_steps=capacity_steps)


def trace_terms(model_trace, guide_trace) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_lik, kl)`` from one (model, guide) trace pair: the summed log-likelihood of
    the observed sites (a scalar) and the per-example KL of the latent sites, shape
    ``(..., B)`` with the data plate last."""
    log_lik = torch.zeros(())
    kl = torch.zeros(())
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            log_lik = log_lik + site["log_prob_sum"]
            continue
        q_site = guide_trace.nodes[name]
        try:
            site_kl = kl_divergence(q_site["fn"], site["fn"])
        except NotImplementedError:
            site_kl = q_site["unscaled_log_prob"] - site["unscaled_log_prob"]
        kl = kl + scale_and_mask(site_kl, mask=site["mask"])
    return log_lik, kl


class CapacityELBO(pyro.infer.Trace_ELBO):
    """:math:`-\\log p(x|z) + \\gamma B |\\overline{\\mathrm{KL}} - C|` summed over a batch;
    ``differentiable_loss(model, guide, *args, capacity=C, **kwargs)``."""

    def __init__(self, gamma: float = 100.0, num_particles: int = 1, max_plate_nesting: int = 1):
        check(gamma, 0.0, 0)
        super().__init__(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=max_plate_nesting,
        )
        self.gamma = float(gamma)

    def differentiable_loss(self, model, guide, *args, capacity: float = 0.0, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            log_lik, kl = trace_terms(model_trace, guide_trace)
            batch = kl.shape[-1] if kl.dim() else 1
            mean_kl = kl.mean(-1) if kl.dim() else kl
            loss = loss - log_lik + (self.gamma * batch * (mean_kl - capacity).abs()).sum()
        return loss / self.num_particles

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


def capacity_module(module: nn.Module, gamma: float = 100.0, num_particles: int = 1) -> nn.Module:
    """The capacity objective of ``module.model``/``module.guide`` as a module:
    ``loss(x, capacity=C)``, summed over the batch."""
    return CapacityELBO(gamma, num_particles)(Program(module, "model"), Program(module, "guide"))
