"""Observation models p(x|z): how a decoder's output becomes a distribution over x.

A likelihood is parameter-free: it says how many numbers the decoder must produce
per pixel (:meth:`Likelihood.out_features`) and turns them into a Pyro distribution
with one event dimension (the pixels of one example).

- ``bernoulli``: :math:`p(x|z) = \\prod_i \\mathrm{Bernoulli}(x_i; \\sigma(\\ell_i))`,
  the decoder gives logits :math:`\\ell`. Data must lie in [0, 1].
- ``gaussian``: :math:`p(x|z) = \\prod_i \\mathcal{N}(x_i; \\mu_i, s_i^2)`; with
  ``scale=None`` the decoder gives both :math:`\\mu` and :math:`s` (softplus plus a
  floor, so pixels that never vary cannot make the density unbounded); with a fixed
  ``scale`` it gives :math:`\\mu` only and the log-likelihood is
  :math:`-\\|x - \\mu\\|^2 / 2s^2` plus a constant.
- ``continuous-bernoulli``: the normalised continuous Bernoulli of Loaiza-Ganem &
  Cunningham (2019) on [0, 1].

Example::

    >>> lik = make("bernoulli")
    >>> lik.distribution(torch.zeros(3, 64)).log_prob(torch.ones(3, 64)).shape
    torch.Size([3])
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl_vae.errors import UserError


class Likelihood:
    """Base class: map decoder outputs to ``p(x|z)``; its ``.mean`` is the decoder mean."""

    name: str = ""
    unit_interval: bool = False  # data must lie in [0, 1]

    def out_features(self, x_dim: int) -> int:
        return x_dim

    def distribution(self, out: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`UserError` when ``x`` cannot be scored by this likelihood."""
        if self.unit_interval and (x.min() < 0 or x.max() > 1):
            raise UserError(
                f"the {self.name} likelihood needs data in [0, 1], but values range over "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; rescale the data or use "
                "--likelihood gaussian"
            )


class Bernoulli(Likelihood):
    name = "bernoulli"
    unit_interval = True

    def distribution(self, out):
        return dist.Bernoulli(logits=out, validate_args=False).to_event(1)


class ContinuousBernoulli(Likelihood):
    name = "continuous-bernoulli"
    unit_interval = True

    def distribution(self, out):
        return dist.ContinuousBernoulli(logits=out, validate_args=False).to_event(1)


class Gaussian(Likelihood):
    """Gaussian pixels; learned (decoder-given) scale when ``scale`` is None."""

    name = "gaussian"

    def __init__(self, scale: float | None = None, min_scale: float = 1e-2):
        if scale is not None and scale <= 0:
            raise UserError(f"a Gaussian likelihood needs a positive scale, got {scale}")
        self.scale = scale
        self.min_scale = min_scale

    def out_features(self, x_dim):
        return x_dim if self.scale is not None else 2 * x_dim

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale is not None:
            return out, torch.full_like(out, self.scale)
        loc, raw = out.chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def distribution(self, out):
        loc, scale = self.split(out)
        return dist.Normal(loc, scale).to_event(1)


LIKELIHOODS = ("bernoulli", "gaussian", "continuous-bernoulli")


def make(spec: str | Likelihood) -> Likelihood:
    """Build a likelihood from its name; ``gaussian:0.5`` fixes the scale at 0.5."""
    if isinstance(spec, Likelihood):
        return spec
    name, _, arg = spec.partition(":")
    if name == "bernoulli" and not arg:
        return Bernoulli()
    if name == "continuous-bernoulli" and not arg:
        return ContinuousBernoulli()
    if name == "gaussian":
        try:
            scale = float(arg) if arg else None
        except ValueError:
            scale = math.nan
        if scale is not None and not scale > 0:
            raise UserError(f"bad Gaussian scale in {spec!r}; write gaussian or gaussian:0.1")
        return Gaussian(scale)
    raise UserError(
        f"unknown likelihood {spec!r}; choose one of {', '.join(LIKELIHOODS)} "
        "(gaussian:S fixes the scale at S)"
    )
