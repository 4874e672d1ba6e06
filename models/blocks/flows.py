"""Pyro's conditional planar and radial flows with their inverses (Rezende & Mohamed 2015).

Pyro's ``ConditionedPlanar`` and ``ConditionedRadial`` score only their own draws (the
inverse comes from a cache), so a guide built on them cannot score a point it did not draw:
annealed importance sampling from the guide, for one, needs :math:`q(z|x)` anywhere. Both
inverses exist under the conditions Pyro enforces (:math:`w^\\top \\hat u \\ge -1`,
:math:`\\beta \\ge -\\alpha`):

- planar, :math:`y = x + \\hat u \\tanh(w^\\top x + b)`: :math:`a = w^\\top x` solves
  :math:`a + w^\\top \\hat u \\tanh(a + b) = w^\\top y`, increasing in :math:`a` and within
  :math:`|w^\\top \\hat u|` of :math:`w^\\top y` (bisection, then one Newton step that gives
  the implicit gradient), and :math:`x = y - \\hat u \\tanh(a + b)`;
- radial, :math:`y = x + \\beta (x - x_0) / (\\alpha + r)`: :math:`\\lVert y - x_0\\rVert =
  r (1 + \\beta / (\\alpha + r))` is a quadratic in :math:`r`, so :math:`x = x_0 + (y - x_0)
  / (1 + \\beta / (\\alpha + r))` in closed form.

Example::

    >>> t = conditional_radial(3, 5, [8]).condition(torch.randn(4, 5))
    >>> x = torch.randn(4, 3)
    >>> bool(torch.allclose(t.inv(t(x).clone()), x, atol=1e-5))
    True
"""

from __future__ import annotations

from functools import partial

import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.transforms.radial import ConditionedRadial
from pyro.nn import DenseNN

BISECTION_STEPS = 60


class Planar(ConditionedPlanar):
    """Pyro's conditioned planar step with a numerical inverse."""

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        b, u, w = self._params() if callable(self._params) else self._params
        u_hat = self.u_hat(u, w)
        wu, wy = (w * u_hat).sum(-1, keepdim=True), (w * y).sum(-1, keepdim=True)
        with torch.no_grad():
            lo, hi = wy - wu.abs(), wy + wu.abs()
            for _ in range(BISECTION_STEPS):
                mid = (lo + hi) / 2
                below = mid + wu * torch.tanh(mid + b) < wy
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            a = (lo + hi) / 2
        t = torch.tanh(a + b)
        a = a - (a + wu * t - wy) / (1 + wu * (1 - t**2))
        x = y - u_hat * torch.tanh(a + b)
        self._call(x)  # the log-determinant at x, for log_abs_det_jacobian
        return x


class Radial(ConditionedRadial):
    """Pyro's conditioned radial step with its closed-form inverse."""

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x0, alpha_prime, beta_prime = self._params() if callable(self._params) else self._params
        alpha = F.softplus(alpha_prime)
        beta = -alpha + F.softplus(beta_prime)
        diff = y - x0
        ry = diff.norm(dim=-1, keepdim=True)
        c = alpha + beta - ry  # r^2 + c r - ry alpha = 0, r >= 0 (stable on both signs of c)
        root = torch.sqrt(c**2 + 4 * ry * alpha)
        r = torch.where(c > 0, 2 * ry * alpha / (c + root), (root - c) / 2)
        x = x0 + diff / (1 + beta / (alpha + r))
        self._call(x)
        return x


class ConditionalPlanar(T.ConditionalPlanar):
    def condition(self, context: torch.Tensor) -> Planar:
        return Planar(partial(self._params, context))


class ConditionalRadial(T.ConditionalRadial):
    def condition(self, context: torch.Tensor) -> Radial:
        return Radial(partial(self._params, context))


def conditional_planar(input_dim: int, context_dim: int, hidden: list[int]) -> ConditionalPlanar:
    """Pyro's ``conditional_planar``, invertible: a hypernetwork gives ``(b, u, w)``."""
    return ConditionalPlanar(DenseNN(context_dim, hidden, [1, input_dim, input_dim]))


def conditional_radial(input_dim: int, context_dim: int, hidden: list[int]) -> ConditionalRadial:
    """Pyro's ``conditional_radial``, invertible: a hypernetwork gives ``(z0, alpha', beta')``."""
    return ConditionalRadial(DenseNN(context_dim, hidden, [input_dim, 1, 1]))
