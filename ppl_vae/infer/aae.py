"""The adversarial autoencoder's objective (Makhzani et al. 2015, "Adversarial
Autoencoders"): reconstruction plus an adversarial game that matches the aggregate posterior
:math:`q(z) = \\mathbb{E}_{p(x)} q(z|x)` to the prior :math:`p(z)`, in place of the KL term.

A discriminator :math:`D` tells prior draws :math:`\\tilde z \\sim p(z)` (label 1) from the
guide's codes :math:`z \\sim q(z|x)` (label 0), minimising (their eq. 1, the
regularisation phase)

.. math::

    -\\tfrac12\\big[\\overline{\\log D(\\tilde z)} + \\overline{\\log(1 - D(z))}\\big];

the encoder, the generator of codes, fools it with the non-saturating loss
:math:`-\\log D(z)` (Goodfellow et al. 2014), so over a batch of :math:`n` the pair minimises

.. math::

    -\\textstyle\\sum_i \\log p(x_i \\mid z_i) - \\lambda \\sum_i \\log D(z_i),

the reconstruction phase and the encoder's half of the regularisation phase in one step
(the paper alternates them; Appendix: the discriminator two layers of 1000 units). The KL
term of the ELBO is removed from the loss, not scaled to 0: for any pair, the loss is
:math:`-\\mathrm{ELBO} - \\sum_i [\\log q(z_i|x_i) - \\log p(z_i)] - \\lambda \\sum_i \\log
D(z_i)`. The prior draws are made by the model's own prior sites in the trace, so any prior
the program states is the target. The discriminator and its Adam (lr 1e-4, betas
(0.5, 0.9)) are the objective's own, as FactorVAE's
(:class:`~ppl_vae.infer.factorvae.CodeDiscriminatorELBO`), saved in the checkpoint.

Example::

    >>> elbo = AdversarialELBO(weight=1.0, hidden=(8,))
    >>> elbo.statistic
    'generator_loss'
"""

from __future__ import annotations

import torch
from torch.nn.functional import softplus

from ppl_vae.infer.factorvae import CodeDiscriminatorELBO
from ppl_vae.infer.mmd import latent_sites


def prior_draws(model_trace, guide_trace) -> torch.Tensor:
    """One draw of each latent site's prior (the model's site), flattened per example."""
    draws = []
    for name in latent_sites(guide_trace):
        value, fn = guide_trace.nodes[name]["value"], model_trace.nodes[name]["fn"]
        draws.append(fn.sample().reshape(value.shape[0], -1))
    return torch.cat(draws, -1)


def kl_sum(model_trace, guide_trace) -> torch.Tensor:
    """:math:`\\sum_i \\log q(z_i|x_i) - \\log p(z_i)` at the guide's draws, over every site."""
    return sum(
        guide_trace.nodes[name]["log_prob_sum"] - model_trace.nodes[name]["log_prob_sum"]
        for name in latent_sites(guide_trace)
    )


class AdversarialELBO(CodeDiscriminatorELBO):
    """:math:`-\\sum_i \\log p(x_i|z_i) + \\lambda \\sum_i -\\log D(z_i)` over a batch."""

    statistic = "generator_loss"

    def __init__(self, weight: float, hidden=(1000, 1000), seed: int = 0, max_plate_nesting=1):
        super().__init__(hidden, seed, max_plate_nesting)
        self.weight = float(weight)

    def regulariser(self, model_trace, guide_trace, z: torch.Tensor):
        fool = softplus(-self.tc_logits(z)).sum()  # -log D(z)
        penalty = self.weight * fool - kl_sum(model_trace, guide_trace)
        pending = (z.detach(), prior_draws(model_trace, guide_trace).detach())
        return penalty, fool.detach(), pending

    def discriminator_loss(self, z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        real, fake = self.net(prior).squeeze(-1), self.net(z).squeeze(-1)
        return 0.5 * (softplus(-real).mean() + softplus(fake).mean())


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> AdversarialELBO:
    """``--objective aae``: ``--aae-lambda``, ``--discriminator-hidden``."""
    hidden = tuple(config.discriminator_hidden or (1000, 1000))
    return AdversarialELBO(config.aae_lambda, hidden, config.seed, max_plate_nesting)
