"""beta-TCVAE (Chen et al. 2018): the ELBO with its total-correlation term reweighted.

The KL term of the ELBO, averaged over the data, splits into three parts (Chen et al.
2018, eq. 2), with :math:`q(z) = \\frac1N \\sum_n q(z|x_n)` the aggregate posterior:

.. math::

    \\mathbb{E}_{p(x)}\\mathrm{KL}(q(z|x)\\|p(z)) =
        \\underbrace{I_q(x; z)}_{\\text{MI}}
      + \\underbrace{\\mathrm{KL}\\big(q(z) \\,\\|\\, \\textstyle\\prod_j q(z_j)\\big)}_{\\text{TC}}
      + \\underbrace{\\textstyle\\sum_j \\mathrm{KL}(q(z_j) \\| p(z_j))}_{\\text{dim-wise KL}}.

beta-TCVAE weights only the total correlation by :math:`\\beta`, so the loss is the
negative ELBO plus :math:`(\\beta - 1)\\,\\mathrm{TC}`. The TC is estimated on each minibatch
of size :math:`M` from a data set of size :math:`N` by minibatch-weighted sampling
(their eq. 3),

.. math::

    \\log q(z_i) \\approx \\log \\sum_{m=1}^M q(z_i \\mid x_m) - \\log(NM), \\qquad
    \\log \\textstyle\\prod_j q(z_{ij}) \\approx \\sum_j \\Big[\\log \\sum_m q(z_{ij} \\mid x_m)
      - \\log(NM)\\Big],

from the guide's factorised Gaussian sites in the trace (every latent dimension of every
latent site is one :math:`z_j`). :class:`TCELBO` extends Pyro's ``Trace_ELBO`` through
``_differentiable_loss_particle`` and ``super()``, as :mod:`ppl_vae.infer.capacity` does; the
trainer's hook ``at_step`` sets ``beta_tc`` from the beta schedule and scales no latent site.

Example::

    >>> import torch
    >>> from ppl_vae.infer.objective import Objective
    >>> from ppl_vae.programs import from_object
    >>> from ppl_vae.models.vae import VAE
    >>> x = torch.rand(16, 64)
    >>> pair = from_object(VAE(x_dim=64, latent_dim=3), x)
    >>> elbo = TCELBO(dataset_size=1000)
    >>> elbo.beta_tc = 1.0  # no reweighting: the plain negative ELBO
    >>> from ppl_vae.infer.elbo import make_elbo
    >>> _ = torch.manual_seed(0)
    >>> a = float(Objective(pair, elbo)(x))
    >>> _ = torch.manual_seed(0)
    >>> b = float(Objective(pair, make_elbo())(x))
    >>> abs(a - b) < 1e-3
    True
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pyro.infer
import torch
from pyro.poutine.util import site_is_subsample

from ppl_vae.errors import UserError
from ppl_vae.infer.objective import StepwiseELBO


def _normal_factors(site: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(value, loc, scale)`` of a guide site that is a factorised Normal, each ``(B, d)``."""
    fn = site["fn"]
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    if not isinstance(fn, dist.Normal):
        raise UserError(
            "the total-correlation estimate needs factorised Gaussian guide sites "
            f"(Normal(...).to_event(1)); site {site['name']!r} is {type(site['fn']).__name__}"
        )
    value = site["value"]
    batch = value.shape[0]
    return (
        value.reshape(batch, -1),
        fn.loc.expand(value.shape).reshape(batch, -1),
        fn.scale.expand(value.shape).reshape(batch, -1),
    )


def total_correlation(guide_trace, dataset_size: int) -> torch.Tensor:
    """The minibatch-weighted-sampling estimate of TC, summed over the batch."""
    parts = [
        _normal_factors(site)
        for site in guide_trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    z = torch.cat([p[0] for p in parts], -1)  # (M, d)
    loc = torch.cat([p[1] for p in parts], -1)
    scale = torch.cat([p[2] for p in parts], -1)
    m = z.shape[0]
    # log q(z_i,j | x_m) for every pair (i, m) and dimension j: (M, M, d)
    log_qzx = dist.Normal(loc.unsqueeze(0), scale.unsqueeze(0)).log_prob(z.unsqueeze(1))
    log_nm = math.log(dataset_size * m)
    log_qz = torch.logsumexp(log_qzx.sum(-1), dim=1) - log_nm
    log_prod = (torch.logsumexp(log_qzx, dim=1) - log_nm).sum(-1)
    return (log_qz - log_prod).sum()


class TCELBO(StepwiseELBO, pyro.infer.Trace_ELBO):
    """:math:`-\\mathrm{ELBO} + (\\beta - 1)\\,\\mathrm{TC}` over a batch; ``beta_tc`` is set
    by the trainer each step (a pure function of the step, like beta)."""

    def __init__(self, dataset_size: int, max_plate_nesting: int = 1):
        if dataset_size < 1:
            raise UserError(f"the data set size must be at least 1, got {dataset_size}")
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting)
        self.dataset_size = int(dataset_size)
        self.beta_tc = 1.0

    def at_step(self, step: int, beta: float) -> float:
        """beta weights the total correlation alone: no latent site is scaled."""
        self.beta_tc = beta
        return 1.0

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        penalty = (self.beta_tc - 1.0) * total_correlation(guide_trace, self.dataset_size)
        return loss + penalty.detach(), surrogate + penalty


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> TCELBO:
    """The objective ``--objective tcvae`` trains (its minibatch estimate of the total
    correlation needs the training set's size)."""
    return TCELBO(dataset_size, max_plate_nesting=max_plate_nesting)
