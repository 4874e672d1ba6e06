"""The Ladder VAE (Sonderby et al. 2016): top-down inference sharing the generative path.

Sonderby, Raiko, Maaloe, Sonderby & Winther, "Ladder Variational Autoencoders", NeurIPS 2016.

Generative story (the path of :mod:`ppl_vae.models.blocks.hierarchy`):

.. math::

    z_2 \\sim \\mathcal{N}(0, I), \\qquad
    z_1 \\mid z_2 \\sim \\mathcal{N}\\big(\\mu_p(z_2), \\operatorname{diag} \\sigma_p(z_2)^2\\big),
    \\qquad x \\mid z_1 \\sim p_\\theta(x \\mid z_1).

Guide: a deterministic bottom-up pass :math:`d_1 = h_1(x)`, :math:`d_2 = h_2(d_1)` gives
each layer a Gaussian "likelihood" message :math:`(\\hat\\mu_i, \\hat\\sigma_i)`; the top
layer is sampled from its own, :math:`q(z_2|x) = \\mathcal{N}(\\hat\\mu_2, \\hat\\sigma_2^2)`,
and the lower layer from the precision-weighted merge of its message with the **model's own**
top-down conditional (the very network of :math:`p(z_1|z_2)`, eq. 18-19 of the paper):

.. math::

    q(z_1 \\mid z_2, x) = \\mathcal{N}\\Big(
        \\frac{\\hat\\mu_1 \\hat\\sigma_1^{-2} + \\mu_p \\sigma_p^{-2}}
             {\\hat\\sigma_1^{-2} + \\sigma_p^{-2}},\\;
        \\frac{1}{\\hat\\sigma_1^{-2} + \\sigma_p^{-2}}\\Big),
    \\qquad (\\mu_p, \\sigma_p) = (\\mu_p(z_2), \\sigma_p(z_2)).

The ELBO is the two-level one, from the traces. The optimum: the posterior of :math:`z_1`
is proportional to :math:`p(z_1|z_2)\\,p(x|z_1)`; the merge is that product exactly when
:math:`p(x|z_1)` is (as a function of :math:`z_1`) the Gaussian message, so the guide only
learns the data's message and reuses the prior's, and it tracks the prior wherever the data
say little (the paper's argument against collapsed upper layers). ``latent_dim``,
``top_dim``, ``hidden`` and ``top_hidden`` are :class:`~ppl_vae.models.hvae.HVAE`'s.

Example::

    >>> import torch
    >>> m = LadderVAE(x_dim=64, latent_dim=4, top_dim=2, hidden=(32,), top_hidden=(16,))
    >>> m.encode(torch.rand(5, 64)).shape, m.generate(3).shape
    (torch.Size([5, 6]), torch.Size([3, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ppl_vae.models.blocks.hierarchy import Draw, TwoLevel, normal, precision_merge
from ppl_vae.models.blocks.nets import LocScale, mlp
from torch import nn


def up(sizes: list[int]) -> nn.Module:
    """A deterministic bottom-up step (``Linear -> ReLU`` per width; none: the identity)."""
    return nn.Sequential(mlp(sizes), nn.ReLU()) if len(sizes) > 1 else nn.Identity()


class LadderVAE(TwoLevel):
    """Bottom-up messages, top-down sampling through the generative ``top_down`` net."""

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 32,
        top_dim: int = 16,
        hidden: Sequence[int] | str = (256,),
        top_hidden: Sequence[int] | str = (128,),
        likelihood: str = "bernoulli",
    ):
        super().__init__(x_dim, latent_dim, top_dim, hidden, top_hidden, likelihood)
        sizes = [x_dim, *self.hidden]
        self.up1, self.up2 = up(sizes), up(top := [sizes[-1], *self.top_hidden])
        self.message1 = LocScale(nn.Linear(sizes[-1], 2 * self.latent_dim))
        self.message2 = LocScale(nn.Linear(top[-1], 2 * self.top_dim))

    def bottom_up(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """The messages :math:`(\\hat\\mu_1, \\hat\\sigma_1)`, :math:`(\\hat\\mu_2,
        \\hat\\sigma_2)`."""
        d1 = self.up1(x)
        return self.message1(d1), self.message2(self.up2(d1))

    def infer(self, x: torch.Tensor, draw: Draw) -> dict[str, torch.Tensor]:
        """:math:`z_2 \\sim q(z_2|x)`, then :math:`z_1` from the merge with :math:`p(z_1|z_2)`."""
        (loc1, scale1), top = self.bottom_up(x)
        z2 = draw("z2", normal(top))
        z1 = draw("z1", normal(precision_merge(loc1, scale1, *self.top_down(z2))))
        return {"z1": z1, "z2": z2}


MODEL = LadderVAE
