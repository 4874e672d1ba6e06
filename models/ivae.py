"""The spatially invariant VAE (Bepler et al. 2019): rotation and translation as latents.

Bepler, Zhong, Kelley, Brignole & Berger, "Explicitly disentangling image content from
translation and rotation with spatial-VAE" (NeurIPS 2019); pyroVED's ``iVAE``.

Generative story, for each image :math:`n` on the pixel grid :math:`c \\in [-1, 1]^2`:

.. math::

    (\\varphi_n, \\tau_n, z_n) \\sim \\mathcal{N}(0, I), \\qquad
    x_n(c) \\mid \\cdot \\sim \\mathrm{Bernoulli}\\big(\\sigma(g_\\theta(R(\\varphi_n)\\, c
    + s \\tau_n,\\; z_n))\\big) \\text{ for every pixel } c,

with :math:`R(\\varphi)` the rotation by the angle :math:`\\varphi` (radians),
:math:`\\tau \\in \\mathbb{R}^2` a translation scaled by ``dx_prior`` :math:`s = 0.1` and
:math:`g_\\theta` an MLP on one pixel's transformed coordinate and the content :math:`z`
(:class:`~ppl_vae.models.blocks.coords.CoordinateDecoder`). The guide is one Gaussian over
:math:`(\\varphi, \\tau, z)` from an MLP encoder (tanh, as pyroVED's). ``invariances`` picks
the latents: ``"r"`` the angle, ``"t"`` the translation (pyroVED's defaults: both, the
standard normal prior on the angle, :math:`s = 0.1`); ``[]`` is a VAE with a coordinate
decoder. The latent site holds :math:`[\\varphi, \\tau, z]` in that order.

Why it works: the decoder cannot turn its canvas except through :math:`\\varphi`, so an
upright prototype in :math:`z` plus an angle explains a rotated digit more cheaply than a
content code per angle, and the content latents shed the rotation (their linear :math:`R^2`
for the true angle falls far below a VAE's: ``benchmarks/ivae_rotation.py``). The oracle is
the coordinate machinery itself: rendering at :math:`R(\\theta) c` equals the data's image
turned by :math:`\\theta` (:func:`ppl_vae.data.rotated.rotate_images`; tests/models).

Example::

    >>> m = IVAE(x_dim=64, latent_dim=2, hidden=(16,))
    >>> z = m.prior().sample([3])
    >>> z.shape, m.angle(z).shape, m.content(z).shape, m.decode(z).shape
    (torch.Size([3, 5]), torch.Size([3]), torch.Size([3, 2]), torch.Size([3, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks import likelihoods
from ppl_vae.models.blocks.autoencoder import Autoencoder
from ppl_vae.models.blocks.coords import (
    CoordinateDecoder,
    coordinate_grid,
    image_hw,
    transform_coordinates,
)
from ppl_vae.models.blocks.nets import LocScale, mlp, parse_hidden
from torch import nn

from ppl_vae.errors import UserError

INVARIANCES = ("r", "t")


class IVAE(Autoencoder):
    """Tanh MLP encoder, coordinate decoder; ``hidden`` gives both their widths."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        invariances: Sequence[str] = ("r", "t"),
        hidden: Sequence[int] | str = (128, 128),
        likelihood: str = "bernoulli",
        dx_prior: float = 0.1,
        image_shape: tuple[int, ...] | None = None,
    ):
        inv = check_invariances(invariances)
        special = ("r" in inv) + 2 * ("t" in inv)
        super().__init__(x_dim, special + int(latent_dim))
        self.invariances, self.special, self.dx_prior = inv, special, float(dx_prior)
        hidden = parse_hidden(hidden) or (128,)
        self.lik = likelihoods.make(likelihood)
        self.register_buffer("grid", coordinate_grid(image_hw(x_dim, image_shape)), False)
        self.encoder = LocScale(mlp([x_dim, *hidden, 2 * self.latent_dim], activation=nn.Tanh))
        per_pixel = self.lik.out_features(x_dim) // x_dim
        self.decoder = CoordinateDecoder(int(latent_dim), hidden, out=per_pixel)

    def angle(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\varphi` of codes ``z`` (0 without the ``"r"`` invariance)."""
        return z[..., 0] if "r" in self.invariances else z.new_zeros(z.shape[:-1])

    def shift(self, z: torch.Tensor) -> torch.Tensor:
        """The translation :math:`s \\tau` of codes ``z`` (0 without ``"t"``)."""
        if "t" not in self.invariances:
            return z.new_zeros(*z.shape[:-1], 2)
        start = int("r" in self.invariances)
        return self.dx_prior * z[..., start : start + 2]

    def content(self, z: torch.Tensor) -> torch.Tensor:
        """The content latents :math:`z` of codes ``[\\varphi, \\tau, z]``."""
        return z[..., self.special :]

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        coords = transform_coordinates(self.grid, self.angle(z), self.shift(z))
        return self.lik.distribution(self.decoder(coords, self.content(z)))

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)


def check_invariances(invariances: Sequence[str] | str) -> tuple[str, ...]:
    """The invariances as a tuple of ``"r"`` / ``"t"``, or a :class:`UserError`."""
    given = [invariances] if isinstance(invariances, str) else list(invariances or ())
    if any(i not in INVARIANCES for i in given) or len(set(given)) != len(given):
        raise UserError(
            f"invariances must be a list of distinct 'r' (rotation) and 't' (translation), "
            f'got {invariances!r}; e.g. --set \'invariances=["r", "t"]\''
        )
    return tuple(i for i in INVARIANCES if i in given)


MODEL = IVAE
