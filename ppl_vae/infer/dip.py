"""DIP-VAE (Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from
Unlabeled Observations"): the ELBO plus a penalty on the covariance of the aggregate posterior.

The aggregate posterior :math:`q(z) = \\mathbb{E}_{p(x)} q(z|x)` should match the prior's
:math:`\\mathrm{Cov}[z] = I`. With a Gaussian guide :math:`q(z|x) = N(\\mu(x),
\\mathrm{diag}\\,\\sigma^2(x))` its covariance is (their eq. 5)

.. math::

    \\mathrm{Cov}_{q(z)}[z] = \\underbrace{\\mathrm{Cov}_{p(x)}[\\mu(x)]}_{\\text{DIP-VAE-I}}
        + \\mathbb{E}_{p(x)}[\\mathrm{diag}\\,\\sigma^2(x)] \\quad (\\text{DIP-VAE-II: both}),

estimated on each minibatch (:math:`\\mathrm{Cov}[\\mu] = \\overline{\\mu\\mu^\\top} -
\\bar\\mu\\bar\\mu^\\top`, the biased estimator, as disentanglement_lib's
``compute_covariance_z_mean``). The matrix :math:`C` is pushed towards :math:`I`
(``regularize_diag_off_diag_dip``; eq. 6 and 7):

.. math::

    R(C) = \\lambda_{od} \\sum_{i \\ne j} C_{ij}^2 + \\lambda_d \\sum_i (C_{ii} - 1)^2,

added once per batch to the per-example loss, so the batch's sum adds :math:`n R(C)`.
Defaults as the paper and disentanglement_lib: :math:`\\lambda_d = 10 \\lambda_{od}` for
type i, :math:`\\lambda_d = \\lambda_{od}` for type ii. The guide's :math:`\\mu` and
:math:`\\sigma` are read from the guide trace's latent sites, whatever the program: each must
be a ``Normal`` (possibly ``.to_event``); every dimension of every site is one coordinate of
the code. The penalty depends on the batch, not on a draw: the ELBO's estimate is unchanged.

Example::

    >>> mu = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    >>> covariance(mu)
    tensor([[1., 0.],
            [0., 0.]])
    >>> float(dip_penalty(covariance(mu), lambda_od=1.0, lambda_d=10.0))
    10.0
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from ppl_vae.errors import UserError
from ppl_vae.infer.config import DIP_TYPES
from ppl_vae.infer.elbo import Trace_ELBO
from ppl_vae.infer.mmd import latent_sites


def covariance(mu: torch.Tensor) -> torch.Tensor:
    """The biased covariance of the rows of ``mu`` ``(n, d)`` (E[mu mu^T] - E[mu] E[mu]^T)."""
    mean = mu.mean(0)
    return (mu.unsqueeze(2) * mu.unsqueeze(1)).mean(0) - mean.unsqueeze(1) * mean.unsqueeze(0)


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """:math:`\\lambda_{od} \\sum_{i \\ne j} C_{ij}^2 + \\lambda_d \\sum_i (C_{ii} - 1)^2`."""
    diag = cov.diagonal()
    off = cov - torch.diag_embed(diag)
    return lambda_od * off.pow(2).sum() + lambda_d * (diag - 1.0).pow(2).sum()


def normal_parameters(guide_trace) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)``, each ``(n, d)``: every latent site of the guide trace, flattened per
    example and concatenated; a site that is not a (factorised) Normal is a UserError."""
    locs, scales = [], []
    for name in latent_sites(guide_trace):
        site = guide_trace.nodes[name]
        fn = site["fn"]
        while isinstance(fn, dist.Independent):
            fn = fn.base_dist
        if not isinstance(fn, dist.Normal):
            raise UserError(
                f"--objective dip reads the guide's mean and scale from Normal latent sites; "
                f"site {name!r} is {type(fn).__name__}: use a Normal guide or another "
                "objective"
            )
        shape, n = site["value"].shape, site["value"].shape[0]
        locs.append(fn.loc.expand(shape).reshape(n, -1))
        scales.append(fn.scale.expand(shape).reshape(n, -1))
    if not locs:
        raise UserError("--objective dip needs a guide with latent sites; this one has none")
    return torch.cat(locs, -1), torch.cat(scales, -1)


def aggregate_covariance(guide_trace, dip_type: str) -> tuple[torch.Tensor, int]:
    """The batch's estimate of :math:`\\mathrm{Cov}_{q(z)}[z]` (type ii) or of
    :math:`\\mathrm{Cov}[\\mu(x)]` (type i), and the batch's size."""
    loc, scale = normal_parameters(guide_trace)
    cov = covariance(loc)
    if dip_type == "ii":
        cov = cov + torch.diag_embed(scale.pow(2).mean(0))
    return cov, loc.shape[0]


class DIPELBO(Trace_ELBO):
    """:math:`-\\mathrm{ELBO} + n\\, R(C)` over a batch of ``n``."""

    def __init__(
        self, dip_type: str, lambda_od: float, lambda_d: float, max_plate_nesting: int = 1
    ):
        if dip_type not in DIP_TYPES:
            raise UserError(f"unknown DIP type {dip_type!r}; choose one of i, ii")
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting)
        self.dip_type, self.lambda_od, self.lambda_d = dip_type, float(lambda_od), float(lambda_d)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        cov, n = aggregate_covariance(guide_trace, self.dip_type)
        penalty = n * dip_penalty(cov, self.lambda_od, self.lambda_d)
        loss = None if loss is None else loss + penalty.detach()
        return loss, surrogate + penalty


def lambdas(config) -> tuple[float, float]:
    """``(lambda_od, lambda_d)``: ``--dip-lambda-d`` where given, else the paper's default
    for the type (10 lambda_od for i, lambda_od for ii)."""
    lambda_od = config.dip_lambda_od
    if config.dip_lambda_d is not None:
        return lambda_od, config.dip_lambda_d
    return lambda_od, (10.0 if config.dip_type == "i" else 1.0) * lambda_od


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> DIPELBO:
    """``--objective dip``: ``--dip-type``, ``--dip-lambda-od``, ``--dip-lambda-d``."""
    return DIPELBO(config.dip_type, *lambdas(config), max_plate_nesting=max_plate_nesting)
