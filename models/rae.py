"""The regularised autoencoder RAE (Ghosh et al. 2020): point mass, L2 code and decoder penalties.

Generative program (the prior is *kept*, ``has_prior = True``), for each example :math:`n`:

.. math::

    z_n \\sim \\mathcal{N}(0, \\beta^{-1} I), \\qquad
    x_n \\mid z_n \\sim \\mathcal{N}\\big(g_\\theta(z_n),\\, s^2 I\\big), \\qquad
    \\text{plus a factor } e^{-\\lambda R(\\theta, z_n)}.

Guide: :math:`q(z_n \\mid x_n) = \\delta(z_n - h_n)`, :math:`h_n = f_\\phi(x_n)`. With a point
mass :math:`\\log q = 0`, so the negative "ELBO" is the paper's loss (its eq. 11) up to
constants:

.. math::

    \\frac{\\|x - g(h)\\|^2}{2s^2} + \\frac{\\beta}{2}\\|h\\|^2 + \\lambda R,
    \\qquad R = \\begin{cases}
    \\|\\nabla_z \\textstyle\\sum_j g_j(z)\\|^2 \\text{ at } z = h & \\texttt{penalty="gp"} \\\\
    \\tfrac12 \\|\\theta_{\\mathrm{dec}}\\|^2 & \\texttt{penalty="l2"} \\end{cases}

The Gaussian prior of precision :math:`\\beta` *is* the code penalty
:math:`\\tfrac{\\beta}{2}\\|h\\|^2`; the decoder penalty is a ``pyro.factor`` site per example
(the L2 one charges each example the weight decay, so the batch mean is pythae's RAE_L2 loss,
whose optimiser's ``weight_decay`` gives :math:`\\tfrac{\\lambda}{2}\\|\\theta\\|^2`). pythae's
RAE_GP takes its gradient with respect to x through the encoder too; the paper's, used here,
is the decoder's at the code. pythae's loss is ours with ``scale`` :math:`1/\\sqrt 2`.

What is reported as the "ELBO" is :math:`\\log p(x \\mid h) + \\log p(h) - \\lambda R`: a MAP
objective at the code, *not* a bound on :math:`\\log p(x)` (a Delta has no entropy to add), and
the distortion counts :math:`\\lambda R` with :math:`-\\log p(x \\mid h)`. At the optimum the
codes are the autoencoder's shrunk towards 0 and the decoder smooth around them; nothing makes
them follow :math:`\\mathcal{N}(0, \\beta^{-1} I)`, so sampling the prior decodes poorly.
Generate instead from a density fitted to the training codes after training (the paper's
ex-post density estimation): ``ppl-vae sample RUN --sampler gmm`` (or ``maf``).

Example::

    >>> import torch
    >>> m = RAE(x_dim=64, latent_dim=2, hidden=(16,), penalty="l2", decoder_weight=0.5)
    >>> z = torch.zeros(3, 2)
    >>> sq = sum(float((p.detach() ** 2).sum()) for p in m.decoder.parameters())
    >>> torch.allclose(m.penalty_of(z), torch.full((3,), 0.25 * sq))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from ppl_vae.models.ae import AE
from ppl_vae.models.blocks.autoencoder import LATENT, OBSERVED
from ppl_vae.models.blocks.point_mass import check_positive

from ppl_vae.errors import UserError

PENALTIES = ("gp", "l2")


class RAE(AE):
    """:class:`~models.ae.AE` with the code prior :math:`\\mathcal{N}(0, 1/\\beta)`
    (``code_weight`` :math:`\\beta`) and the decoder penalty ``penalty`` of weight
    ``decoder_weight`` :math:`\\lambda` (pythae's defaults for both weights)."""

    has_prior = True
    #: The gradient penalty's ``autograd.grad`` cannot be traced (ppl_vae.infer.jit).
    train_defaults = {"jit": False}

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        scale: float = 1.0,
        penalty: str = "gp",
        code_weight: float = 1e-4,
        decoder_weight: float = 1e-7,
        net: str = "mlp",
        image_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__(x_dim, latent_dim, hidden, scale, net, image_shape)
        if penalty not in PENALTIES:
            raise UserError(
                f"penalty must be one of {PENALTIES}, got {penalty!r}; e.g. --set 'penalty=\"l2\"'"
            )
        self.penalty = penalty
        self.code_weight = check_positive("code_weight", code_weight)
        self.decoder_weight = check_positive("decoder_weight", decoder_weight)

    def prior(self) -> dist.TorchDistribution:
        """:math:`\\mathcal{N}(0, \\beta^{-1} I)`: :math:`-\\log p(h) = \\tfrac{\\beta}{2}
        \\|h\\|^2` + const."""
        loc = self._zero.expand(self.latent_dim)
        return dist.Normal(loc, torch.full_like(loc, self.code_weight**-0.5)).to_event(1)

    def penalty_of(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\lambda R` per code, shape ``z.shape[:-1]``. The gradient penalty keeps
        its graph when gradients are on (training), and is computed under ``no_grad`` too."""
        if self.penalty == "l2":
            sq = sum((p**2).sum() for p in self.decoder.parameters())
            return (0.5 * self.decoder_weight * sq).expand(z.shape[:-1])
        training = torch.is_grad_enabled()
        with torch.enable_grad():
            at = z if z.requires_grad else z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.decoder(at).sum(), at, create_graph=training)
        return self.decoder_weight * grad.pow(2).sum(-1)

    def model(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample(LATENT, self.prior().expand([x.shape[0]]))
            pyro.factor("decoder_penalty", -self.penalty_of(z), has_rsample=True)
            return pyro.sample(OBSERVED, self.likelihood(z), obs=x)


MODEL = RAE
