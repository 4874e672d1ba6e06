"""The autoencoder: an MLP encoder f and decoder g with a point-mass guide, no prior term.

Generative program (the prior site is masked, ``has_prior = False``):

.. math::

    x_n \\mid z_n \\sim \\mathcal{N}\\big(g_\\theta(z_n),\\, s^2 I\\big)
    \\quad\\text{with a fixed scale } s.

Guide: the point mass :math:`q(z_n \\mid x_n) = \\delta(z_n - f_\\phi(x_n))`. The ELBO is
then the reconstruction log-likelihood alone, so SVI minimises

.. math::

    -\\mathrm{ELBO}(x) = \\frac{\\|x - g(f(x))\\|^2}{2 s^2} + \\frac{D}{2}\\log(2\\pi s^2),

the squared-error autoencoder up to constants (Goodfellow et al. 2016, ch. 14). The
prior :math:`\\mathcal{N}(0, I)` is kept only so ``generate`` has something to decode;
nothing trains the codes towards it.

Example::

    >>> import torch
    >>> ae = AE(x_dim=64, latent_dim=2, hidden=(32,))
    >>> x = torch.rand(5, 64)
    >>> ae.encode(x).shape, ae.reconstruct(x).shape
    (torch.Size([5, 2]), torch.Size([5, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.nets import make_decoder, make_encoder, parse_hidden
from ppl_vae.models.blocks.point_mass import PointMassAutoencoder, check_positive, gaussian_fixed


class AE(PointMassAutoencoder):
    """MLP encoder ``x -> hidden -> z`` and mirrored decoder; Gaussian pixels with fixed
    ``scale``."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        scale: float = 1.0,
        net: str = "mlp",
        image_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__(x_dim, latent_dim)
        hidden = parse_hidden(hidden)
        self.scale = check_positive("scale", scale)
        self.encoder = make_encoder(net, x_dim, latent_dim, hidden, image_shape)
        self.decoder = make_decoder(net, latent_dim, x_dim, hidden, image_shape)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return gaussian_fixed(self.decoder(z), self.scale)


MODEL = AE
