"""Discrete latents shared by ``cat-vae`` and ``joint-vae``.

- :class:`StraightThroughCategorical`: Pyro's ``RelaxedOneHotCategoricalStraightThrough``
  (Jang et al. 2017; Maddison et al. 2017) whose ``log_prob`` is the *categorical* one of
  the hard sample, with ``kl_divergence`` against a ``OneHotCategorical`` the discrete KL.
  The hard forward value :math:`\\mathrm{onehot}(\\arg\\max_k (\\ell_k + g_k)/\\tau)`,
  :math:`g_k` Gumbel, is an exact draw of :math:`\\mathrm{Cat}(\\mathrm{softmax}\\,\\ell)`
  for every temperature (the Gumbel-max trick): only the backward pass (the relaxed
  sample's gradient) is the estimator's bias. Pyro's own ``log_prob`` scores the relaxed
  sample under the continuous Concrete density, which mixed with a categorical prior is no
  ELBO of anything; here both terms are the discrete model's.
- :func:`joint_logits` / :func:`one_hots`: ``D`` independent categoricals of ``K`` classes
  as ONE categorical over the :math:`K^D` joint states, so ``TraceEnum_ELBO`` can enumerate
  them exactly (a decoder that reads all ``D`` at once couples them; enumerating each in
  its own plate would be wrong).

Example::

    >>> q = StraightThroughCategorical(torch.tensor(1.0), logits=torch.zeros(2, 3))
    >>> q.rsample().sum(-1), q.log_prob(q.rsample())
    (tensor([1., 1.]), tensor([-1.0986, -1.0986]))
    >>> one_hots(torch.tensor([5]), categories=3, latent_dim=2)
    tensor([[0., 1., 0., 0., 0., 1.]])
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence, register_kl

from ppl_vae.errors import UserError

#: The most joint states ``estimator="enum"`` enumerates (each costs one decoder pass).
MAX_STATES = 1024


class StraightThroughCategorical(dist.RelaxedOneHotCategoricalStraightThrough):
    """Straight-through relaxed one-hot draws, scored as the categorical they are."""

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Hard one-hot draws (Pyro's class returns the soft relaxed ones here)."""
        with torch.no_grad():
            return self.rsample(torch.Size(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`\\log q(c)` of the hard one-hot ``value`` (its straight-through gradient
        kept: under ``--elbo trace`` it is the entropy's only path; the default mean-field
        ELBO takes the exact discrete KL instead)."""
        if self._validate_args:
            self._validate_sample(value)
        return (value * self.logits.log_softmax(-1)).sum(-1)

    def categorical(self) -> dist.OneHotCategorical:
        """The discrete distribution the hard samples follow."""
        return dist.OneHotCategorical(logits=self.logits)


@register_kl(StraightThroughCategorical, dist.OneHotCategorical)
def _kl_straight_through(p: StraightThroughCategorical, q: dist.OneHotCategorical):
    return kl_divergence(p.categorical(), q)


def uniform(zero: torch.Tensor, *shape: int) -> dist.OneHotCategorical:
    """The uniform one-hot prior over the last of ``shape``. It also scores codes (the
    guide's probabilities, e.g. ``ppl-vae sample``'s held-out log p(codes)) without a
    support error: :math:`\\sum_k p_k \\log(1/K) = \\log(1/K)`, every state's own mass."""
    return dist.OneHotCategorical(logits=zero.expand(*shape), validate_args=False)


def joint_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(..., D, K)`` logits of independent categoricals to ``(..., K**D)`` logits of their
    product over the joint states, state :math:`s = \\sum_d c_d K^{D-1-d}`."""
    first, *rest = logits.log_softmax(-1).unbind(-2)
    for log_p in rest:
        first = (first.unsqueeze(-1) + log_p.unsqueeze(-2)).flatten(-2)
    return first


def one_hots(state: torch.Tensor, categories: int, latent_dim: int) -> torch.Tensor:
    """Joint states ``(...)`` to the ``D`` one-hot codes they stand for, ``(..., D*K)``."""
    powers = categories ** torch.arange(latent_dim - 1, -1, -1, device=state.device)
    digits = torch.div(state.long().unsqueeze(-1), powers, rounding_mode="floor") % categories
    return torch.nn.functional.one_hot(digits, categories).flatten(-2).float()


def check(categories: int, latent_dim: int, estimator: str, temperature: float) -> None:
    """Refuse settings the estimators cannot use, naming the fix."""
    if estimator not in ("relaxed", "enum"):
        raise UserError(f'estimator must be "relaxed" or "enum", got {estimator!r}')
    if categories < 2 or latent_dim < 1 or not temperature > 0:
        raise UserError("categorical latents need categories >= 2, latent_dim >= 1, temperature>0")
    if estimator == "enum" and categories**latent_dim > MAX_STATES:
        raise UserError(
            f"enumerating {categories}**{latent_dim} joint states is over {MAX_STATES}; "
            'use estimator="relaxed" or fewer latents, e.g. --set latent_dim=2'
        )
