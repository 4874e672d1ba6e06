"""FactorVAE (Kim & Mnih 2018, "Disentangling by Factorising"): the ELBO minus gamma times a
discriminator's estimate of the total correlation of the aggregate posterior.

The total correlation :math:`\\mathrm{TC}(z) = \\mathrm{KL}(q(z) \\| \\bar q(z))`, with
:math:`\\bar q(z) = \\prod_j q(z_j)`, is estimated with the density-ratio trick: a
discriminator :math:`D` tells codes of :math:`q(z)` from codes of :math:`\\bar q(z)`, and at
its optimum :math:`D/(1-D) = q(z)/\\bar q(z)`, so (their eq. 3)

.. math::

    \\mathrm{TC}(z) \\approx \\mathbb{E}_{q(z)}\\Big[\\log \\frac{D(z)}{1 - D(z)}\\Big],
    \\qquad \\log \\frac{D(z)}{1-D(z)} = \\text{the discriminator's logit}.

The pair's loss over a batch of :math:`n` is :math:`-\\mathrm{ELBO} + \\gamma \\sum_i
\\mathrm{logit}\\, D(z_i)`, :math:`z_i \\sim q(z|x_i)` the guide's (reparameterised) draw, the
discriminator's weights held fixed in it. Draws of :math:`\\bar q(z)` are the batch's codes
with each dimension permuted independently across the batch (their Algorithm 1,
:func:`permute_dims`). The discriminator (their Appendix: an MLP with leaky ReLUs, 6 layers
of 1000 units by default) minimises the cross-entropy
:math:`-\\tfrac12\\big[\\overline{\\log D(z)} + \\overline{\\log(1 - D(\\mathrm{perm}(z)))}\\big]`
with its own Adam (lr 1e-4, betas (0.5, 0.9), as the paper). As in disentanglement_lib, its
step uses the same batch's codes as the pair's step and the weights they were drawn with
(the paper's Algorithm 2 draws a second batch): :meth:`FactorELBO.at_step`, the trainer's
per-step hook, takes it on the codes the previous step kept. Its weights, its optimizer and
the codes pending are the objective's ``state_dict``, saved in the run's checkpoint.

Example::

    >>> z = torch.arange(12.0).reshape(4, 3)
    >>> p = permute_dims(z)
    >>> bool((p.sort(0).values == z).all())  # each column keeps its values
    True
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions.util import is_identically_zero
from torch import nn
from torch.func import functional_call
from torch.nn.functional import softplus

from ppl_vae.errors import UserError
from ppl_vae.infer.adam import Adam
from ppl_vae.infer.elbo import Trace_ELBO
from ppl_vae.infer.mmd import latent_sites
from ppl_vae.infer.objective import StepwiseELBO

#: The discriminator's optimiser (Kim & Mnih 2018, Appendix).
LR, BETAS = 1e-4, (0.5, 0.9)


def discriminator(dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """An MLP from a code of ``dim`` to one logit, leaky ReLU (slope 0.2) between layers."""
    layers, width = [], dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 1))


def adam_of(params: list[torch.Tensor], device: torch.device) -> torch.optim.Adam | Adam:
    """The paper's Adam: :mod:`ppl_vae.infer.adam`'s on the CPU (``torch.optim`` would import
    ``torch._dynamo``, seconds of a short run), ``torch.optim.Adam`` elsewhere."""
    if device.type != "cpu":
        return torch.optim.Adam(params, lr=LR, betas=BETAS)
    optimizer = Adam(params, lr=LR)
    optimizer.param_groups[0]["betas"] = BETAS
    return optimizer


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each column of ``z`` ``(n, d)`` permuted independently across the rows."""
    order = torch.rand(z.shape, device=z.device).argsort(0)
    return z.gather(0, order)


def discriminator_loss(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of telling ``z`` (label 1) from :func:`permute_dims` of it (0)."""
    real, fake = net(z).squeeze(-1), net(permute_dims(z)).squeeze(-1)
    return 0.5 * (softplus(-real).mean() + softplus(fake).mean())


def codes(guide_trace) -> torch.Tensor:
    """The guide's draws of every latent site, flattened per example: ``(n, d)``."""
    parts = []
    for name in latent_sites(guide_trace):
        site = guide_trace.nodes[name]
        if not is_identically_zero(site["score_parts"].score_function):
            raise UserError(
                f"--objective factorvae needs reparameterised guide sites; {name!r} is not"
            )
        parts.append(site["value"].reshape(site["value"].shape[0], -1))
    if not parts:
        raise UserError("--objective factorvae needs a guide with latent sites; this one has none")
    return torch.cat(parts, -1)


class CodeDiscriminatorELBO(StepwiseELBO, Trace_ELBO):
    """The ELBO plus a regulariser from a discriminator on the guide's codes, which the
    objective owns (built on the first trace, when the code's size is known) and steps with
    its own Adam in :meth:`at_step`, on what the last training step kept (``pending``).
    Subclasses give :meth:`regulariser` and :meth:`discriminator_loss`."""

    #: The epoch record's name of the regulariser's statistic (per example).
    statistic = "regulariser"

    def __init__(self, hidden: tuple[int, ...], seed: int = 0, max_plate_nesting: int = 1):
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting)
        self.hidden, self.seed = tuple(hidden), int(seed)
        self.net: nn.Sequential | None = None
        self.optimizer: torch.optim.Adam | Adam | None = None
        self.pending: tuple[torch.Tensor, ...] | None = None  # the last training step's codes
        self.sums: torch.Tensor | None = None  # this epoch's [statistic, D loss, rows, steps]

    def build(self, dim: int, device: torch.device) -> nn.Sequential:
        """The discriminator and its Adam, initialised from ``seed`` alone."""
        if self.net is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self.net = discriminator(dim, self.hidden).to(device)
            self.optimizer = adam_of(list(self.net.parameters()), device)
            self.sums = torch.zeros(4, device=device)
        return self.net

    def tc_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The discriminator's logit per row, its weights held fixed (no gradient to them)."""
        net = self.build(z.shape[-1], z.device)
        fixed = {k: v.detach() for k, v in net.named_parameters()}
        return functional_call(net, fixed, (z,)).squeeze(-1)

    def regulariser(self, model_trace, guide_trace, z: torch.Tensor):
        """``(penalty, statistic, pending)``: the term added to the batch's loss, its
        statistic summed over the batch, and what the discriminator's next step needs."""
        raise NotImplementedError

    def discriminator_loss(self, *pending: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        z = codes(guide_trace)
        penalty, statistic, pending = self.regulariser(model_trace, guide_trace, z)
        if torch.is_grad_enabled():  # a training step: its codes train the discriminator
            self.pending = pending
            self.sums[0] += statistic
            self.sums[2] += z.shape[0]
        loss = None if loss is None else loss + penalty.detach()
        return loss, surrogate + penalty

    def at_step(self, step: int, beta: float) -> float:
        """One step of the discriminator on what the last step kept; beta as given."""
        if self.pending is not None and self.net is not None:
            self.optimizer.zero_grad(set_to_none=True)
            d_loss = self.discriminator_loss(*self.pending)
            d_loss.backward()
            self.optimizer.step()
            self.sums[1] += d_loss.detach()
            self.sums[3] += 1
            self.pending = None
        return beta

    def epoch_state(self, step: int) -> dict[str, float]:
        """The epoch's mean statistic per example and the discriminator's mean loss
        (log 2 = 0.693: it cannot tell its two kinds of codes apart)."""
        if self.sums is None:
            return {}
        stat, d_loss, n, steps = self.sums.tolist()
        self.sums.zero_()
        return {self.statistic: stat / max(n, 1.0), "discriminator_loss": d_loss / max(steps, 1.0)}

    def state_dict(self) -> dict[str, Any]:
        """The discriminator's weights and optimizer, the pending codes, the epoch's sums."""
        if self.net is None:
            return {}
        state = {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}
        state["sums"] = self.sums.clone()
        if self.pending is not None:
            state["pending"] = list(self.pending)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        net = self.build(state["net"]["0.weight"].shape[1], state["sums"].device)
        net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sums.copy_(state["sums"])
        self.pending = tuple(state["pending"]) if "pending" in state else None


class FactorELBO(CodeDiscriminatorELBO):
    """:math:`-\\mathrm{ELBO} + \\gamma \\sum_i \\mathrm{logit}\\, D(z_i)` over a batch."""

    statistic = "tc_estimate"

    def __init__(self, gamma: float, hidden=(1000,) * 6, seed: int = 0, max_plate_nesting=1):
        super().__init__(hidden, seed, max_plate_nesting)
        self.gamma = float(gamma)

    def regulariser(self, model_trace, guide_trace, z: torch.Tensor):
        logits = self.tc_logits(z)
        return self.gamma * logits.sum(), logits.detach().sum(), (z.detach(),)

    def discriminator_loss(self, z: torch.Tensor) -> torch.Tensor:
        return discriminator_loss(self.net, z)


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> FactorELBO:
    """``--objective factorvae``: ``--factor-gamma``, ``--discriminator-hidden``."""
    hidden = tuple(config.discriminator_hidden or (1000,) * 6)
    return FactorELBO(config.factor_gamma, hidden, config.seed, max_plate_nesting)
