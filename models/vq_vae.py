"""The VQ-VAE (van den Oord et al. 2017): a quantised point-mass guide, a post-hoc code prior.

van den Oord, Vinyals & Kavukcuoglu, "Neural discrete representation learning" (2017). The
encoder gives :math:`z_e(x) \\in \\mathbb{R}^{P \\times D}` (``latent_dim`` positions of
``code_dim`` values), each position replaced by its nearest of ``codebook_size`` vectors,
:math:`z_q = e_{k(x)}` (:mod:`~ppl_vae.models.blocks.codebook`); the guide is the point mass
:math:`\\delta(z - z_q)` with the straight-through gradient, the model scores
:math:`x \\sim p_\\theta(x \\mid z_q)` (Bernoulli logits by default). The loss,

.. math::

    -\\log p_\\theta(x|z_q) + \\|\\mathrm{sg}[z_e] - e\\|^2 + \\beta \\|z_e - \\mathrm{sg}[e]\\|^2,

is what SVI minimises: the last two terms are ``pyro.factor("vq", ...)`` in the guide, where
the quantisation happens (Trace_ELBO subtracts the guide's log-density, so a factor of
:math:`+L` adds :math:`L` to the loss). At the optimum every code sits at the mean of the
encoder outputs assigned to it (k-means' step) and the encoder commits to its codes
(:math:`\\beta = 0.25`). The prior is uniform while training (the paper's choice: its KL is
constant, the prior site masked, ``has_prior = False``); after each epoch it is refitted,
an independent categorical per position from the counts of the training rows' codes
(``refit_after_epoch``, :class:`~ppl_vae.models.blocks.codebook.CodePrior`), and
``ppl-vae sample`` draws from it (the paper fits a PixelCNN instead).

Not comparable: it has no ELBO. Its ``test_elbo`` is :math:`\\log p(x \\mid z_q)` alone (no
codebook terms, prior or entropy), no bound on :math:`\\log p(x)`; no rate, KL or IW log p(x).
Compare it on ``test_recon_mse`` and samples, as the deterministic autoencoders.

Example::

    >>> m = VQVAE(x_dim=64, latent_dim=3, code_dim=2, codebook_size=5, hidden=(16,))
    >>> m.indices(torch.rand(4, 64)).shape, m.encode(torch.rand(4, 64)).shape
    (torch.Size([4, 3]), torch.Size([4, 6]))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from ppl_vae.models.blocks import codebook as vq
from ppl_vae.models.blocks import likelihoods
from ppl_vae.models.blocks.autoencoder import LATENT, Autoencoder
from ppl_vae.models.blocks.nets import make_decoder, make_encoder, parse_hidden
from ppl_vae.models.blocks.point_mass import check_positive, point_mass
from torch import nn


class VQVAE(Autoencoder):
    """MLP (or ``net="conv"``) encoder to ``latent_dim`` x ``code_dim`` values, a codebook
    of ``codebook_size`` vectors, the mirrored decoder; ``beta`` weighs the commitment."""

    has_prior = False
    train_defaults = dict(lr=3e-3)  # at 1e-3 the codebook trails the encoder and the loss spikes

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 8,
        code_dim: int = 4,
        codebook_size: int = 64,
        beta: float = 0.25,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
        net: str = "mlp",
        image_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__(x_dim, int(latent_dim) * int(code_dim))
        hidden = parse_hidden(hidden)
        self.positions, self.code_dim, k = int(latent_dim), int(code_dim), int(codebook_size)
        self.beta = check_positive("beta", beta)
        self.lik = likelihoods.make(likelihood)
        self.encoder = make_encoder(net, x_dim, self.latent_dim, hidden, image_shape)
        out = self.lik.out_features(x_dim)
        self.decoder = make_decoder(net, self.latent_dim, out, hidden, image_shape)
        self.codebook = nn.Parameter(torch.empty(k, self.code_dim).uniform_(-1 / k, 1 / k))
        self.register_buffer("code_probs", torch.full((self.positions, k), 1.0 / k))

    def prior(self) -> dist.TorchDistribution:
        return vq.CodePrior(self.code_probs, self.codebook)  # uniform until refitted

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return self.lik.distribution(self.decoder(z))

    def quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(z_e, z_q)`, each ``(..., P, D)``."""
        z_e = self.encoder(x).unflatten(-1, (self.positions, self.code_dim))
        return z_e, self.codebook[vq.nearest(z_e, self.codebook)]

    def indices(self, x: torch.Tensor) -> torch.Tensor:
        """The code index :math:`k_p(x)` of each position, ``(..., P)``."""
        return vq.nearest(self.quantise(x)[0], self.codebook)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        z_e, z_q = self.quantise(x)
        return point_mass(vq.straight_through(z_e, z_q).flatten(-2))

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`z = z_q(x)` and the codebook and commitment terms as a factor."""
        with pyro.plate("data", x.shape[0], dim=-1):
            z_e, z_q = self.quantise(x)
            pyro.factor("vq", vq.vq_terms(z_e, z_q, self.beta), has_rsample=True)
            return pyro.sample(LATENT, point_mass(vq.straight_through(z_e, z_q).flatten(-2)))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """The codebook starts at encoder outputs of random training rows (no dead codes)."""
        z_e = self.encoder(x[: 4 * self.codebook.shape[0]]).reshape(-1, self.code_dim)
        self.codebook.copy_(z_e[torch.randperm(z_e.shape[0])[: self.codebook.shape[0]]])

    @torch.no_grad()
    def refit_after_epoch(self, x: torch.Tensor) -> None:
        """The code prior from the counts of the codes of ``x``, the training rows."""
        k = torch.cat([self.indices(rows) for rows in x.split(1024)])  # (N, P)
        self.code_probs.copy_(vq.frequencies(k, self.codebook.shape[0]))


MODEL = VQVAE
