"""WAE-MMD (Tolstikhin et al. 2018) and InfoVAE-MMD (Zhao et al. 2019): objectives over the
aggregate posterior of the batch.

Both penalise the maximum mean discrepancy between the aggregate posterior
:math:`q(z) = \\mathbb{E}_{p(x)} q(z|x)` and the prior :math:`p(z)`, estimated on each
minibatch from the guide's codes :math:`z_1..z_n \\sim q(z|x_i)` and as many prior draws
:math:`\\tilde z_1..\\tilde z_n \\sim p(z)` by the unbiased U-statistic (Tolstikhin et al.,
Algorithm 1; Gretton et al. 2012, eq. 3),

.. math::

    \\widehat{\\mathrm{MMD}}_k = \\frac{1}{n(n-1)} \\sum_{i \\ne j} \\big[k(z_i, z_j) +
        k(\\tilde z_i, \\tilde z_j)\\big] - \\frac{2}{n^2} \\sum_{i, j} k(z_i, \\tilde z_j),

zero in expectation when :math:`q(z) = p(z)`. Kernels (as pythae's, with :math:`C = 2 d
s^2`, :math:`d` the code's size and :math:`s^2 = 1` the prior's variance): RBF
:math:`k(a, b) = \\exp(-\\lVert a - b\\rVert^2 / C)`, and the inverse multiquadratic kernel
summed over scales, :math:`k(a, b) = \\sum_{c} cC / (cC + \\lVert a - b\\rVert^2)`,
:math:`c \\in \\{0.1, 0.2, 0.5, 1, 2, 5, 10\\}` (the WAE paper's choice). Pyro's ``Trace_MMD``
takes the MMD across particles only, not across the batch; this one is across the batch.

The per-example objectives, with :math:`\\mathrm{KL}_i = \\log q(z_i|x_i) - \\log p(z_i)`
(one draw), in the papers' units (per example; the batch's sum adds :math:`n` times the
penalty):

.. math::

    \\text{WAE: } -\\log p(x_i|z_i) + \\lambda\\, \\widehat{\\mathrm{MMD}}, \\qquad
    \\text{InfoVAE: } -\\log p(x_i|z_i) + (1-\\alpha)\\,\\mathrm{KL}_i
        + (\\alpha + \\lambda - 1)\\, \\widehat{\\mathrm{MMD}}

(Zhao et al. eq. 6 with the MMD as the divergence; :math:`\\alpha = 1, \\lambda = 1` is
their MMD-VAE, :math:`\\lambda = 1, \\alpha = 0` the ELBO). WAE's reconstruction cost is
the model's own :math:`-\\log p(x|z)`, so a trained WAE is still scored by the ELBO and
IW log p(x) of its programs (with a guide never asked to cover the posterior: read those
beside its reconstruction error). :class:`MMDELBO` extends Pyro's ``Trace_ELBO`` (the
suite's, without host reads) through ``_differentiable_loss_particle`` and ``super()``.

Example::

    >>> _ = torch.manual_seed(0)
    >>> same = mmd(torch.randn(500, 2), torch.randn(500, 2))
    >>> shifted = mmd(torch.randn(500, 2) + 1.0, torch.randn(500, 2))
    >>> abs(float(same)) < 0.01 < float(shifted)
    True
"""

from __future__ import annotations

import torch
from pyro.distributions.util import is_identically_zero
from pyro.poutine.util import site_is_subsample

from ppl_vae.errors import UserError
from ppl_vae.infer.elbo import Trace_ELBO

KERNELS = ("imq", "rbf")
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def kernel(a: torch.Tensor, b: torch.Tensor, kind: str = "imq", s2: float = 1.0) -> torch.Tensor:
    """The ``(n, m)`` Gram matrix :math:`k(a_i, b_j)` of rows ``a`` ``(n, d)``, ``b`` ``(m, d)``."""
    c = 2.0 * a.shape[-1] * s2
    d2 = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
    if kind == "rbf":
        return torch.exp(-d2 / c)
    return sum(k * c / (k * c + d2) for k in IMQ_SCALES)


def mmd(z: torch.Tensor, w: torch.Tensor, kind: str = "imq", s2: float = 1.0) -> torch.Tensor:
    """The unbiased U-statistic of :math:`\\mathrm{MMD}^2` between the rows of ``z`` and
    ``w`` (0 when either has fewer than 2 rows: no estimate)."""
    n, m = z.shape[0], w.shape[0]
    if n < 2 or m < 2:
        return z.new_zeros(())
    kzz, kww = kernel(z, z, kind, s2), kernel(w, w, kind, s2)
    within = (kzz.sum() - kzz.diagonal().sum()) / (n * (n - 1))
    within = within + (kww.sum() - kww.diagonal().sum()) / (m * (m - 1))
    return within - 2.0 * kernel(z, w, kind, s2).mean()


def latent_sites(guide_trace) -> list[str]:
    return [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


class MMDELBO(Trace_ELBO):
    """:math:`-\\log p(x|z) + w_{\\mathrm{KL}}\\, \\mathrm{KL} + n\\, w_{\\mathrm{MMD}}\\,
    \\widehat{\\mathrm{MMD}}` summed over a batch of ``n``; ``kl_weight = 1, mmd_weight = 0``
    is the ELBO. Every latent site is one block of the code (flattened per example)."""

    def __init__(
        self,
        kl_weight: float,
        mmd_weight: float,
        kernel: str = "imq",
        max_plate_nesting: int = 1,
    ):
        if kernel not in KERNELS:
            raise UserError(f"unknown MMD kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting)
        self.kl_weight, self.mmd_weight, self.kernel = float(kl_weight), float(mmd_weight), kernel

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        codes, draws, kl = [], [], 0.0
        for name in latent_sites(guide_trace):
            site = guide_trace.nodes[name]
            if not is_identically_zero(site["score_parts"].score_function):
                raise UserError(
                    f"the MMD objectives need reparameterised guide sites; {name!r} is not"
                )
            prior = model_trace.nodes[name]
            kl = kl + site["log_prob_sum"] - prior["log_prob_sum"]
            value = site["value"]
            fn = prior["fn"]
            draw = fn.rsample() if fn.has_rsample else fn.sample()
            codes.append(value.reshape(value.shape[0], -1))
            draws.append(draw.reshape(value.shape[0], -1))
        penalty = (self.kl_weight - 1.0) * kl
        if codes:
            z, w = torch.cat(codes, -1), torch.cat(draws, -1)
            penalty = penalty + z.shape[0] * self.mmd_weight * mmd(z, w, self.kernel)
        penalty = torch.as_tensor(penalty)
        loss = None if loss is None else loss + penalty.detach()
        return loss, surrogate + penalty


def wae_from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> MMDELBO:
    """``--objective wae``: no KL term, ``--mmd-lambda`` times the MMD (``--mmd-kernel``)."""
    return MMDELBO(0.0, config.mmd_lambda, config.mmd_kernel, max_plate_nesting)


def infovae_from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> MMDELBO:
    """``--objective infovae``: the KL weighted by 1 - ``--info-alpha``, the MMD by
    ``--info-alpha`` + ``--mmd-lambda`` - 1."""
    alpha, lam = config.info_alpha, config.mmd_lambda
    return MMDELBO(1.0 - alpha, alpha + lam - 1.0, config.mmd_kernel, max_plate_nesting)
