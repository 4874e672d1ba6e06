"""Capacity-controlled objective (Burgess et al. 2018) as a Pyro ELBO.

Instead of weighting the KL term by :math:`\\beta`, the rate is pulled towards a target
capacity :math:`C` (in nats per example) that the trainer raises linearly during training:

.. math::

    \\mathcal{L}(x_{1..B}) = -\\sum_{n} \\log p(x_n \\mid z_n)
        + \\gamma\\, B\\, \\Big|\\tfrac{1}{B}\\textstyle\\sum_n
          \\big(\\log q(z_n \\mid x_n) - \\log p(z_n)\\big) - C\\Big|,
    \\qquad z_n \\sim q(z \\mid x_n),
    \\qquad C(t) = C_{\\max} \\min(1, t / N).

:class:`CapacityELBO` extends Pyro's ``Trace_ELBO`` the way ``pyro.contrib.cevae`` does: its
``_differentiable_loss_particle`` takes the ELBO particle from ``super()`` (so Pyro's
estimator, score-function terms included, stays Pyro's) and adds the difference between
the capacity penalty and the KL the ELBO already holds. The KL is read off the traces of
any program pair: the latent sites are the guide's sample sites, each site's KL the closed
form :math:`\\mathrm{KL}(q(z_n|x_n) \\| p(z_n))` for the sites in ``analytic_sites`` (the
trainer sets the pair's :attr:`~ppl_vae.programs.Programs.analytic_kl_sites`, where the
closed form is valid, as for ``TraceMeanField_ELBO``; pythae's DisentangledBetaVAE takes it
too), else the one-draw estimate :math:`\\log q(z_n|x_n) - \\log p(z_n)`: the penalty's
target is the rate itself, so its estimate should vary as little as it can. :math:`C` is a pure
function of the step (:func:`capacity`) that the trainer evaluates and sets on the ELBO
(``at_step``, the hook :func:`~ppl_vae.infer.trainer.fit` calls) before each step; the
programs never see a step counter. The penalty's own gradient flows through
reparameterised draws only.

Example::

    >>> import torch
    >>> from ppl_vae.infer.objective import Objective
    >>> from ppl_vae.programs import from_object
    >>> from ppl_vae.models.vae import VAE
    >>> x = torch.rand(8, 64)
    >>> elbo = CapacityELBO(gamma=100.0)
    >>> elbo.capacity = capacity(500, 25.0, 1000)
    >>> float(Objective(from_object(VAE(x_dim=64, latent_dim=2), x), elbo)(x)) > 0
    True
"""

from __future__ import annotations

import pyro.infer
import torch

from ppl_vae.infer.objective import StepwiseELBO
from ppl_vae.programs import closed_form_kl


def capacity(step: int, capacity_max: float, capacity_steps: int) -> float:
    """:math:`C(t) = C_{\\max} \\min(1, t/N)`: 0 at the start, ``capacity_max`` from step
    ``capacity_steps`` on (at once when ``capacity_steps`` is 0)."""
    if capacity_steps <= 0:
        return float(capacity_max)
    return float(capacity_max) * min(1.0, step / capacity_steps)


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> CapacityELBO:
    """The objective ``--objective capacity`` trains (its settings were checked with the
    config: ``gamma > 0``, ``capacity_max >= 0``, ``capacity_steps >= 0``)."""
    return CapacityELBO(
        config.gamma,
        config.num_particles,
        max_plate_nesting,
        capacity_max=config.capacity_max,
        capacity_steps=config.capacity_steps,
    )


def batch_size(site: dict) -> int:
    """The size of a site's data plate (named ``data``, else its outermost own plate)."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and "particles" not in f.name]
    for f in frames:
        if f.name == "data":
            return f.size
    return frames[-1].size if frames else 1


def site_kl(guide_site: dict, model_site: dict, closed_form: bool) -> torch.Tensor:
    """A latent site's KL summed over its batch: the closed form (scaled and masked as the
    site is) where ``closed_form`` and ``kl_divergence`` has one, else the draw's
    ``log q(z) - log p(z)``."""
    kl = closed_form_kl(guide_site, model_site) if closed_form else None
    if kl is None:
        return guide_site["log_prob_sum"] - model_site["log_prob_sum"]
    return kl.sum()


class CapacityELBO(StepwiseELBO, pyro.infer.Trace_ELBO):
    """:math:`-\\sum_n \\log p(x_n|z_n) + \\gamma B |\\overline{\\mathrm{KL}} - C|` over a batch."""

    #: The latent sites whose KL the penalty takes in closed form (none unless set).
    analytic_sites: frozenset[str] = frozenset()

    def __init__(
        self,
        gamma: float,
        num_particles: int = 1,
        max_plate_nesting: int = 1,
        capacity_max: float = 0.0,
        capacity_steps: int = 0,
    ):
        super().__init__(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=max_plate_nesting,
        )
        self.gamma = float(gamma)
        self.capacity_max, self.capacity_steps = float(capacity_max), int(capacity_steps)
        self.capacity = 0.0

    def at_step(self, step: int, beta: float) -> float:
        """Set this step's target :math:`C(t)`; gamma replaces beta, so no latent scale."""
        self.capacity = capacity(step, self.capacity_max, self.capacity_steps)
        return 1.0

    def epoch_state(self, step: int) -> dict[str, float]:
        """The target of the epoch's last step (``capacity`` in the epoch record)."""
        return {"capacity": capacity(step - 1, self.capacity_max, self.capacity_steps)}

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        latent = [
            n
            for n, s in guide_trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"]
        ]
        held = sum(  # the one-draw KL the ELBO particle holds
            guide_trace.nodes[n]["log_prob_sum"] - model_trace.nodes[n]["log_prob_sum"]
            for n in latent
        )
        kl = sum(
            site_kl(guide_trace.nodes[n], model_trace.nodes[n], n in self.analytic_sites)
            for n in latent
        )
        particles = self.num_particles if self.vectorize_particles else 1
        batch = batch_size(guide_trace.nodes[latent[0]]) * particles
        penalty = self.gamma * batch * (kl / batch - self.capacity).abs() - held
        return loss + penalty.detach(), surrogate + penalty

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))
