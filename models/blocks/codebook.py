"""Vector quantisation (van den Oord et al. 2017): a codebook, nearest-code assignment, the
straight-through estimator, the codebook and commitment terms, and a categorical prior over
codes fitted by counts.

An encoder output :math:`z_e \\in \\mathbb{R}^{P \\times D}` (``P`` code positions) is
quantised position by position to its nearest codebook vector,

.. math::

    k_p = \\arg\\min_k \\|z_{e,p} - e_k\\|^2, \\qquad z_{q,p} = e_{k_p},

with gradients passed straight through, :math:`z_q = z_e + \\mathrm{sg}[e_k - z_e]`
(:func:`straight_through`: the decoder's gradient at :math:`z_q` lands on :math:`z_e`).
The codebook and commitment terms (:func:`vq_terms`), per example,

.. math::

    \\sum_p \\|\\mathrm{sg}[z_{e,p}] - e_{k_p}\\|^2
    + \\beta \\|z_{e,p} - \\mathrm{sg}[e_{k_p}]\\|^2,

pull the codes to the encoder's outputs and the outputs to their codes.

:class:`CodePrior` is an independent categorical per position over the ``K`` codes,
:math:`p(k_1..k_P) = \\prod_p \\pi_{p, k_p}`, placed on the codebook vectors: its
``sample`` draws codes, its ``log_prob`` of a point is that of the codes nearest to it (the
mass of its Voronoi cell).

Example::

    >>> book = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    >>> nearest(torch.tensor([[[0.9, 0.8], [0.1, -0.2]]]), book)
    tensor([[1, 0]])
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints


def nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The index of the nearest row of ``codebook`` ``(K, D)`` to each ``z`` ``(..., D)``."""
    d2 = (z * z).sum(-1, keepdim=True) - 2 * z @ codebook.T + (codebook * codebook).sum(-1)
    return d2.argmin(-1)


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """:math:`z_e + \\mathrm{sg}[z_q - z_e]`: the value of ``z_q``, the gradient of ``z_e``."""
    return z_e + (z_q - z_e).detach()


def vq_terms(z_e: torch.Tensor, z_q: torch.Tensor, beta: float) -> torch.Tensor:
    """Codebook plus ``beta`` times commitment term per example, summed over the last two
    dimensions (positions and code dimensions) of ``(..., P, D)``."""
    codebook = (z_e.detach() - z_q).pow(2).sum((-1, -2))
    commitment = (z_e - z_q.detach()).pow(2).sum((-1, -2))
    return codebook + beta * commitment


def frequencies(k: torch.Tensor, size: int) -> torch.Tensor:
    """Per position, the share of rows of ``k`` ``(N, P)`` that use each of ``size`` codes:
    ``(P, size)``, the maximum-likelihood categorical of each position."""
    ones = torch.ones_like(k.T, dtype=torch.get_default_dtype())
    counts = ones.new_zeros(k.shape[1], size).scatter_add_(1, k.T, ones)
    return counts / k.shape[0]


class CodePrior(dist.TorchDistribution):
    """Independent categoricals ``probs`` ``(P, K)`` over the rows of ``codebook`` ``(K, D)``,
    as a distribution of flat codes ``(P * D,)``."""

    arg_constraints = {"probs": constraints.simplex}
    support = constraints.real_vector

    def __init__(self, probs: torch.Tensor, codebook: torch.Tensor, validate_args=None):
        self.probs, self.codebook = probs, codebook
        event = torch.Size([probs.shape[0] * codebook.shape[1]])
        super().__init__(torch.Size(), event, validate_args=validate_args)

    def sample(self, sample_shape: torch.Size = ()) -> torch.Tensor:
        k = dist.Categorical(probs=self.probs).sample(sample_shape)  # (..., P)
        return self.codebook[k].flatten(-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z = value.reshape(*value.shape[:-1], self.probs.shape[0], -1)
        k = nearest(z, self.codebook)
        log_p = self.probs.clamp_min(1e-30).log()
        positions = torch.arange(self.probs.shape[0], device=k.device)
        return log_p[positions, k].sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        return (self.probs @ self.codebook).flatten()
