"""PCA as a linear autoencoder with tied weights: x_hat = W W^T (x - m) + m, Delta guide.

Generative program (prior masked, ``has_prior = False``):

.. math::

    x_n \\mid z_n \\sim \\mathcal{N}\\big(W z_n + m,\\, s^2 I\\big).

Guide: :math:`q(z_n \\mid x_n) = \\delta\\big(z_n - W^\\top (x_n - m)\\big)`, the same
:math:`W \\in \\mathbb{R}^{D \\times d}` as the decoder. Training minimises

.. math::

    \\frac{1}{2s^2} \\big\\| (I - W W^\\top)(x - m) \\big\\|^2 + \\text{const}.

The centring :math:`m` is a learned parameter. Only its component outside
:math:`\\operatorname{span} W` enters the loss, and setting the gradient to zero puts that
component at the data mean's, :math:`(I - WW^\\top)(\\bar x - m) = 0`: the learned
centring is the data's centring. At the optimum :math:`W` has orthonormal columns that
span the top-:math:`d` principal subspace of the sample covariance (Baldi & Hornik 1989),
so reconstruction error and subspace match :class:`sklearn.decomposition.PCA`. The
columns are a rotation of the principal axes, not the axes themselves.

Example::

    >>> import torch
    >>> m = PCA(x_dim=5, latent_dim=2)
    >>> x = torch.randn(4, 5)
    >>> torch.allclose(m.reconstruct(x), (x - m.mean) @ m.W @ m.W.T + m.mean)
    True
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from ppl_vae.models.blocks.point_mass import PointMassAutoencoder, check_positive
from torch import nn

from ppl_vae.errors import UserError


class PCA(PointMassAutoencoder):
    """Tied linear encoder/decoder with a learned centring ``mean``; ``scale`` is the fixed
    Gaussian noise (it rescales the loss, not the optimum): by default the training rows'
    root mean variance, so the squared error is of order ``x_dim`` nats in any units and
    float32 resolves it beside the Gaussian's constant."""

    #: Full-batch L-BFGS until converged: a deterministic loss, so W reaches the principal
    #: subspace; training stops once the gradient's norm is 1e-3 of its first
    #: (``grad_tolerance``), at most ``epochs`` of 20 iterations (tests/models: within 0.05%
    #: of scikit-learn's test error on six public tables, splits drawn at random).
    train_defaults = {
        "batch_size": 65536,
        "optimizer": "lbfgs",
        "lr": 1.0,
        "epochs": 100,
        "grad_tolerance": 1e-3,
    }

    def __init__(self, x_dim: int, latent_dim: int = 2, scale: float | None = None):
        if not 1 <= latent_dim <= x_dim:
            raise UserError(
                f"pca needs 1 <= latent_dim <= {x_dim} (the data's width), got {latent_dim}"
            )
        super().__init__(x_dim, latent_dim)
        self.fixed_scale = None if scale is None else check_positive("scale", scale)
        self.register_buffer("scale", torch.tensor(self.fixed_scale or 1.0))
        # Orthonormal start: W^T W = I, the constraint the optimum satisfies anyway.
        q, _ = torch.linalg.qr(torch.randn(x_dim, latent_dim))
        self.W = nn.Parameter(q[:, :latent_dim].contiguous())
        self.mean = nn.Parameter(torch.zeros(x_dim))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Before the first step (:func:`~ppl_vae.infer.trainer.fit`): the centring at the
        training rows' mean, where the optimum puts it (its gradient is 0 there whatever
        :math:`W` is), so the steps go to the subspace alone; the noise from the data
        unless ``scale`` was given."""
        self.mean.copy_(x.mean(0))
        if self.fixed_scale is None:
            self.scale.fill_(float(x.var(0).mean().sqrt()) or 1.0)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.W

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(z @ self.W.T + self.mean, self.scale).to_event(1)

    def _load_from_state_dict(self, state, prefix, *args) -> None:
        state.setdefault(prefix + "scale", torch.tensor(1.0))  # runs saved before it was kept
        super()._load_from_state_dict(state, prefix, *args)

    def components(self) -> torch.Tensor:
        """An orthonormal basis of the learned subspace, ``(latent_dim, x_dim)`` like
        ``sklearn``'s ``components_`` (up to a rotation within the subspace)."""
        q, _ = torch.linalg.qr(self.W.detach())
        return q.T


MODEL = PCA
