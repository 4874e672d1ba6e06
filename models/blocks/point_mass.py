"""Deterministic autoencoders as Pyro programs: a point-mass (``Delta``) guide.

An autoencoder's encoder :math:`f` becomes the degenerate guide

.. math::

    q(z \\mid x) = \\delta\\big(z - f(x)\\big),

so the guide's single "draw" is the code :math:`h = f(x)` and :math:`\\log q = 0`
there. The ELBO then reduces to

.. math::

    \\mathcal{L}(x) = \\log p\\big(x \\mid z = f(x)\\big) + \\log p\\big(f(x)\\big),

the reconstruction log-likelihood plus (for a model that keeps its prior) the log prior
density of the code: MAP estimation of the code, amortised by :math:`f`. With
``has_prior = False`` the prior site is masked, leaving the reconstruction term alone;
with a Gaussian likelihood of fixed scale :math:`s` that is
:math:`-\\|x - g(f(x))\\|^2 / 2s^2` plus a constant.

:class:`PointMassAutoencoder` supplies that guide: a subclass implements :meth:`code`
(the encoder :math:`f`) and :meth:`likelihood` (the decoder :math:`g` and the noise).

Example::

    >>> import torch
    >>> from torch import nn
    >>> class Linear(PointMassAutoencoder):
    ...     def __init__(self, x_dim, latent_dim=2):
    ...         super().__init__(x_dim, latent_dim)
    ...         self.f, self.g = nn.Linear(x_dim, latent_dim), nn.Linear(latent_dim, x_dim)
    ...     def code(self, x):
    ...         return self.f(x)
    ...     def likelihood(self, z):
    ...         return gaussian_fixed(self.g(z), 1.0)
    >>> m = Linear(x_dim=6)
    >>> x = torch.rand(4, 6)
    >>> bool(torch.equal(m.posterior(x).sample(), m.code(x)))
    True
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.autoencoder import Autoencoder
from ppl_vae.models.blocks.likelihoods import Gaussian

from ppl_vae.errors import UserError


def point_mass(code: torch.Tensor) -> dist.TorchDistribution:
    """:math:`\\delta(z - h)` with one event dimension; ``rsample`` returns ``code`` itself,
    so gradients flow into the encoder, and ``log_prob`` at the code is 0."""
    return dist.Delta(code).to_event(1)


def gaussian_fixed(loc: torch.Tensor, scale: float) -> dist.TorchDistribution:
    """:math:`\\mathcal{N}(x; \\mu, s^2 I)`: its negative log-density is
    :math:`\\|x - \\mu\\|^2 / 2s^2 + \\tfrac{D}{2}\\log(2\\pi s^2)`."""
    return Gaussian(float(scale)).distribution(loc)


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or a :class:`UserError` naming ``name`` when it is not > 0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a positive number, got {value!r}") from None
    if not value > 0:
        raise UserError(f"{name} must be positive, got {value}; pass e.g. --set {name}=0.1")
    return value


class PointMassAutoencoder(Autoencoder):
    """Base class of the deterministic autoencoders: ``posterior(x)`` is a point mass at
    ``code(x)``, and the prior term is masked unless a subclass sets ``has_prior = True``
    (the sparse autoencoder keeps a Laplace prior, so its loss gains the L1 penalty)."""

    has_prior = False

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder :math:`h = f(x)`, shape ``(B, latent_dim)``."""
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        return point_mass(self.code(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(x)
