"""The tanh autoencoder of the lecture notes: f(x) = tanh(W^T x + b), g(h) = tanh(W h + c).

Generative program (prior masked, ``has_prior = False``):

.. math::

    x_n \\mid z_n \\sim \\mathcal{N}\\big(\\tanh(W z_n + c),\\, s^2 I\\big).

Guide: :math:`q(z_n \\mid x_n) = \\delta\\big(z_n - \\tanh(W^\\top x_n + b)\\big)`, with the
*same* :math:`W \\in \\mathbb{R}^{D \\times d}` in encoder and decoder (tied weights, as in
the notes; ``tied=False`` gives the decoder its own matrix). Training minimises

.. math::

    \\frac{1}{2s^2}\\big\\|x - \\tanh\\!\\big(W \\tanh(W^\\top x + b) + c\\big)\\big\\|^2
    + \\text{const},

a nonlinear counterpart of PCA's :math:`\\|x - W W^\\top x\\|^2`. The code lies in
:math:`(-1, 1)^d` and the reconstruction in :math:`(-1, 1)^D`, which holds data in [0, 1].

Example::

    >>> import torch
    >>> m = TanhAE(x_dim=64, latent_dim=3)
    >>> h = m.encode(torch.rand(4, 64))
    >>> bool(h.abs().max() < 1), m.decode(h).shape
    (True, torch.Size([4, 64]))
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.point_mass import PointMassAutoencoder, check_positive, gaussian_fixed
from torch import nn


class TanhAE(PointMassAutoencoder):
    """Tied-weight one-layer tanh autoencoder with Gaussian pixels of fixed ``scale``."""

    def __init__(self, x_dim: int, latent_dim: int = 2, tied: bool = True, scale: float = 1.0):
        super().__init__(x_dim, latent_dim)
        self.scale = check_positive("scale", scale)
        self.tied = bool(tied)
        # Orthonormal columns: a small W starts at the saddle W = 0 of the tied loss, where
        # W enters twice and the gradient vanishes to first order.
        self.W = nn.Parameter(nn.init.orthogonal_(torch.empty(x_dim, latent_dim)))
        self.W_dec = None if self.tied else nn.Parameter(self.W.detach().clone())
        self.b = nn.Parameter(torch.zeros(latent_dim))
        self.c = nn.Parameter(torch.zeros(x_dim))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.W + self.b)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        w = self.W if self.W_dec is None else self.W_dec
        return gaussian_fixed(torch.tanh(z @ w.T + self.c), self.scale)


MODEL = TanhAE
