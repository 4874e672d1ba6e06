"""The denoising autoencoder: the guide encodes a corrupted x, the model scores the clean x.

Generative program (prior masked, ``has_prior = False``), as for :mod:`models.ae`:

.. math::

    x_n \\mid z_n \\sim \\mathcal{N}\\big(g_\\theta(z_n),\\, s^2 I\\big).

Guide, in training mode: :math:`\\tilde x_n \\sim C(\\tilde x \\mid x_n)`, then
:math:`q(z_n \\mid x_n) = \\delta\\big(z_n - f_\\phi(\\tilde x_n)\\big)`, where the corruption
:math:`C` is ``gaussian`` (:math:`\\tilde x = x + \\epsilon`,
:math:`\\epsilon \\sim \\mathcal{N}(0, \\nu^2 I)`) or ``mask`` (each pixel set to 0 with
probability :math:`\\nu`); :math:`\\nu` is ``noise_level``. Training minimises

.. math::

    \\mathbb{E}_{\\tilde x \\sim C(\\cdot|x)}
    \\frac{\\|x - g(f(\\tilde x))\\|^2}{2s^2} + \\text{const},

(Vincent et al. 2008). The corruption lives in :meth:`guide_input` and only acts while
the module is in training mode: evaluation, ``encode`` and ``reconstruct`` see clean x.

Example::

    >>> import torch
    >>> m = DenoisingAE(x_dim=64, latent_dim=2, noise="mask", noise_level=0.5)
    >>> x = torch.rand(3, 64)
    >>> bool((m.train().guide_input(x) == 0).any()), bool(m.eval().guide_input(x).equal(x))
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ppl_vae.models.ae import AE
from ppl_vae.models.blocks.point_mass import check_positive

from ppl_vae.errors import UserError

NOISES = ("gaussian", "mask")


def corrupt(
    x: torch.Tensor, noise: str, level: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One draw of the corruption: additive :math:`\\mathcal{N}(0, \\text{level}^2)` noise
    (``gaussian``) or zeroing each value with probability ``level`` (``mask``), drawn on
    ``x``'s device (or the generator's), so a training step copies nothing from the host."""
    where = generator.device if generator is not None else x.device
    if noise == "gaussian":
        eps = torch.randn(x.shape, generator=generator, device=where).to(x)
        return x + level * eps
    if noise == "mask":
        u = torch.rand(x.shape, generator=generator, device=where).to(x)
        return x * (u >= level).to(x.dtype)
    raise UserError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")


class DenoisingAE(AE):
    """:class:`~models.ae.AE` whose guide encodes ``corrupt(x, noise, noise_level)`` while
    training."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        scale: float = 1.0,
        noise: str = "gaussian",
        noise_level: float = 0.3,
        net: str = "mlp",
        image_shape: tuple[int, int, int] | None = None,
    ):
        if noise not in NOISES:
            raise UserError(
                f"unknown noise {noise!r}; choose one of {', '.join(NOISES)} (--set noise=mask)"
            )
        level = check_positive("noise_level", noise_level)
        if noise == "mask" and level >= 1:
            raise UserError(f"mask noise_level is a probability below 1, got {level}")
        super().__init__(x_dim, latent_dim, hidden, scale, net, image_shape)
        self.noise, self.noise_level = noise, level

    def guide_input(self, x: torch.Tensor) -> torch.Tensor:
        return corrupt(x, self.noise, self.noise_level) if self.training else x


MODEL = DenoisingAE
