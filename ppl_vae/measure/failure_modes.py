"""The two failure modes of a VAE, read off the final metrics, in plain English.

1. **Posterior collapse** (the KL penalty is too strong): the code is ignored,
   :math:`q(z|x) \\approx p(z)` and :math:`p(x|z) \\approx p(x)`, so samples are blurry
   averages. Criterion: no active unit (Burda et al. 2016), or a test rate below
   :data:`COLLAPSE_RATE` nats per example.
2. **No compression** (the KL penalty is too weak): the encodings spread far from the
   prior, so prior draws land where the decoder never saw data. Criterion: the aggregate
   posterior :math:`q(z) = \\frac{1}{N}\\sum_n q(z|x_n)`, matched by a Gaussian with its
   mean :math:`m` and covariance :math:`S = \\mathrm{Cov}_n(\\mu_n) +
   \\mathrm{mean}_n\\,\\mathrm{diag}\\,\\sigma_n^2`, is more than :data:`MARGINAL_KL_PER_DIM`
   nats per latent dimension away from the prior,

   .. math::

       \\tfrac{1}{d}\\,\\mathrm{KL}(\\mathcal{N}(m, S) \\,\\|\\, \\mathcal{N}(0, I)) =
       \\tfrac{1}{2d}\\big(\\mathrm{tr}\\,S + m^\\top m - d - \\log\\det S\\big).

   A well-trained VAE keeps this near 0 (below 0.05 on digits at beta = 1, latent 2-20);
   at beta = 0.01 it passes 1. Without the model, the coarser proxy is a mean rate above
   :data:`RATE_PER_DIM` nats per latent dimension. The moment check needs a standard
   normal prior; with any other prior only the proxy applies.

Both modes concern the KL term of a stochastic guide: a model with a point-mass guide (a
deterministic autoencoder, even one that keeps a prior such as ``sparse-ae``) gets no
warning, since its "rate" is a log prior density, not a KL.

Example::

    >>> diagnose({"rate": 0.0, "active_units": 0, "kl_per_dim": [0.0, 0.0]})[0][:27]
    'posterior collapse: the lat'
    >>> diagnose({"rate": 4.0, "active_units": 2, "kl_per_dim": [2.0, 2.0]})
    []
"""

from __future__ import annotations

from typing import Any

import torch

from ppl_vae import traces
from ppl_vae.measure.metrics import eval_mode
from ppl_vae.programs import Programs, is_local, latent_names

COLLAPSE_RATE = 0.1  # nats per example


MARGINAL_KL_PER_DIM = 0.5  # nats per latent dimension, aggregate posterior vs prior


RATE_PER_DIM = 5.0  # nats per latent dimension, used only without a model


@torch.no_grad()
def marginal_kl_per_dim(pair: Programs, x: torch.Tensor, y: torch.Tensor | None = None):
    """:math:`\\mathrm{KL}(\\mathcal{N}(m, S)\\|\\mathcal{N}(0, I)) / d` of the moment-matched
    aggregate posterior over ``x``, from the traces; ``None`` when a guide site has no mean
    and variance or a prior site is not a standard normal."""
    with eval_mode(pair):
        model_tr, guide_tr = traces.trace_pair(pair, pair.eval_args(x, y))
    mus, variances = [], []
    local = [n for n in latent_names(guide_tr) if is_local(guide_tr.nodes[n], x.shape[0])]
    if not local:
        return None
    try:
        for name in local:  # this trace's codes (global sites are no example's code)
            q, p = guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"]
            if not (torch.all(p.mean == 0) and torch.all(p.variance == 1)):
                return None  # the criterion compares with N(0, I)
            mus.append(q.mean.reshape(x.shape[0], -1))
            variances.append(q.variance.reshape(x.shape[0], -1))
    except (NotImplementedError, AttributeError, RuntimeError):
        return None
    mu, var = torch.cat(mus, -1), torch.cat(variances, -1)
    if mu.shape[0] < 2:
        return None
    d = mu.shape[1]
    m = mu.mean(0)
    s = torch.atleast_2d(torch.cov(mu.T)) + torch.diag(var.mean(0))
    s = s + 1e-8 * torch.eye(d, dtype=s.dtype, device=s.device)
    kl = 0.5 * (torch.trace(s) + m @ m - d - torch.logdet(s))
    return float(kl) / d if torch.isfinite(kl) else float("inf")


def diagnose(
    metrics: dict[str, Any],
    pair: Programs | None = None,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> list[str]:
    """Plain-English warnings for the failure modes above, from test-set ``metrics``
    (``rate``, ``active_units``, ``kl_per_dim``) and, when given, the trained ``pair`` and
    test inputs ``x``; empty for a healthy run or a model without a latent prior."""
    rate, active = metrics.get("rate"), metrics.get("active_units")
    if rate is None or active is None or (pair is not None and pair.point_mass):
        return []
    if active == 0 or rate < COLLAPSE_RATE:
        return [
            f"posterior collapse: the latent code is ignored ({active} active units, rate "
            f"{rate:.3g} nats): p(x|z) looks like p(x), samples will be blurry averages; "
            "lower beta or use a warm-up schedule (--beta-schedule linear --warmup-steps N)"
        ]
    dims = len(metrics.get("kl_per_dim") or []) or getattr(pair, "latent_dim", 0) or 1
    marginal = marginal_kl_per_dim(pair, x, y) if pair is not None and x is not None else None
    if marginal is not None:
        if marginal > MARGINAL_KL_PER_DIM:
            return [
                "no compression: q(z|x) is far from p(z) (the aggregate posterior is "
                f"{marginal:.3g} nats per latent dimension from N(0, I)), so prior samples "
                "fall where the decoder saw no data and will look like nonsense; raise beta"
            ]
    elif rate / dims > RATE_PER_DIM:
        return [
            f"no compression: the rate is {rate / dims:.3g} nats per latent dimension, so "
            "q(z|x) is far from p(z) and prior samples will look like nonsense; raise beta"
        ]
    return []
