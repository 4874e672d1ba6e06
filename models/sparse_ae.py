"""The sparse autoencoder: a point-mass guide plus a Laplace prior on the code (L1 penalty).

Generative story, for each example :math:`n` (the prior is *kept*, ``has_prior = True``):

.. math::

    z_{n,i} \\sim \\mathrm{Laplace}(0, 1/\\lambda), \\qquad
    x_n \\mid z_n \\sim \\mathcal{N}\\big(g_\\theta(z_n),\\, s^2 I\\big).

Guide: :math:`q(z_n \\mid x_n) = \\delta(z_n - h_n)`, :math:`h_n = f_\\phi(x_n)`. With a
point mass :math:`\\log q = 0`, so the negative ELBO is the MAP objective for the code,

.. math::

    -\\mathrm{ELBO}(x) = \\frac{\\|x - g(h)\\|^2}{2s^2} + \\lambda \\sum_i |h_i|
        + \\underbrace{\\tfrac{D}{2}\\log(2\\pi s^2)
        - d \\log\\tfrac{\\lambda}{2}}_{\\text{constant}},

the L1-regularised autoencoder :math:`L(x, \\hat x) + \\lambda \\sum_i |h_i|` as a Pyro
program. Note the "rate" that :func:`ppl_vae.measure.metrics.evaluate` reports for this model is
:math:`-\\log p(h)` (a Delta has no density to subtract), so its "ELBO" is this MAP
objective, not a bound on :math:`\\log p(x)`. The penalty also rewards shrinking all
codes while the decoder grows to compensate; sparsity measured with a fixed threshold
(:func:`ppl_vae.runs.compare.code_sparsity`) counts both effects.

Example::

    >>> import math, torch
    >>> m = SparseAE(x_dim=64, latent_dim=4, l1=0.5)
    >>> h = torch.tensor([1.0, -2.0, 0.0, 0.0])
    >>> round(m.prior().log_prob(h).item() - 4 * math.log(0.5 / 2), 6)  # -lambda * |h|_1
    -1.5
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from ppl_vae.models.ae import AE
from ppl_vae.models.blocks.point_mass import check_positive


class SparseAE(AE):
    """:class:`~models.ae.AE` with a Laplace prior of rate ``l1`` (the L1 weight
    :math:`\\lambda`) on every code unit."""

    has_prior = True

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        scale: float = 1.0,
        l1: float = 0.1,
        net: str = "mlp",
        image_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__(x_dim, latent_dim, hidden, scale, net, image_shape)
        self.l1 = check_positive("l1", l1)

    def prior(self) -> dist.TorchDistribution:
        """:math:`p(z) = \\prod_i \\mathrm{Laplace}(z_i; 0, 1/\\lambda)`:
        :math:`\\log p(z) = -\\lambda \\|z\\|_1 + d \\log(\\lambda / 2)`."""
        loc = self._zero.expand(self.latent_dim)
        return dist.Laplace(loc, torch.full_like(loc, 1.0 / self.l1)).to_event(1)


MODEL = SparseAE
