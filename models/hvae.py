"""The two-level VAE (Burda, Grosse & Salakhutdinov 2015, two stochastic layers).

Generative story, for each example (the path of :mod:`ppl_vae.models.blocks.hierarchy`):

.. math::

    z_2 \\sim \\mathcal{N}(0, I_{d_2}), \\qquad
    z_1 \\mid z_2 \\sim \\mathcal{N}\\big(\\mu_\\theta(z_2), \\operatorname{diag}
        \\sigma_\\theta(z_2)^2\\big), \\qquad
    x \\mid z_1 \\sim \\mathrm{Bernoulli}(\\mathrm{logits} = f_\\theta(z_1)).

Guide, bottom-up (the IWAE paper's architecture): :math:`q(z_1, z_2 \\mid x) = q(z_1
\\mid x)\\, q(z_2 \\mid z_1)`, both diagonal Gaussians from MLPs. The ELBO is

.. math::

    \\mathbb{E}_{q}\\big[\\log p(x|z_1) + \\log p(z_1|z_2) + \\log \\mathcal{N}(z_2; 0, I)
        - \\log q(z_1|x) - \\log q(z_2|z_1)\\big],

estimated from the traces (``Trace_ELBO``: no closed form, since :math:`p(z_1|z_2)` depends
on a draw). The optimum: the learned prior :math:`p(z_1) = \\int p(z_1|z_2) p(z_2)\\,dz_2`
is a continuous mixture of Gaussians, so it can match the aggregate posterior of
:math:`z_1` far better than the VAE's fixed :math:`\\mathcal{N}(0, I)`; at the optimum
:math:`q(z_2|z_1)` is the model's posterior of the top layer. On MNIST the paper's Table 1
reports -86.76 nats (one layer) against -85.33 (two), both trained as VAEs.

``--latent-dim`` is :math:`d_1` (the layer next to the data, default 32), ``--set
top_dim=...`` is :math:`d_2` (16); ``hidden`` the nets between x and z1, ``top_hidden``
those between z1 and z2. Codes are ``[z1, z2]``.

Example::

    >>> import torch
    >>> m = HVAE(x_dim=64, latent_dim=4, top_dim=2, hidden=(32,), top_hidden=(16,))
    >>> m.encode(torch.rand(5, 64)).shape, m.generate(3).shape
    (torch.Size([5, 6]), torch.Size([3, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ppl_vae.models.blocks.hierarchy import Draw, TwoLevel, normal
from ppl_vae.models.blocks.nets import GaussianHead


class HVAE(TwoLevel):
    """Two stochastic layers with a bottom-up guide :math:`q(z_1|x) q(z_2|z_1)`."""

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
        self.q_z1 = GaussianHead(x_dim, self.hidden, self.latent_dim)
        self.q_z2 = GaussianHead(self.latent_dim, self.top_hidden, self.top_dim)

    def infer(self, x: torch.Tensor, draw: Draw) -> dict[str, torch.Tensor]:
        """:math:`z_1 \\sim q(z_1|x)`, then :math:`z_2 \\sim q(z_2|z_1)`."""
        z1 = draw("z1", normal(self.q_z1(x)))
        return {"z1": z1, "z2": draw("z2", normal(self.q_z2(z1)))}


MODEL = HVAE
