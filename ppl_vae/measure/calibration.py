"""Simulation-based calibration of the amortised guide (Talts et al. 2018).

Draw :math:`(z^{(n)}, x^{(n)}) \\sim p(z)\\,p(x|z)` from the model (its observed sites
unconditioned), then :math:`L` draws :math:`z^{(n)}_{1..L} \\sim q(z|x^{(n)})` from the
guide, and record per latent site and dimension :math:`d` the rank

.. math::

    r_n = \\#\\{\\ell : z^{(n)}_{\\ell, d} < z^{(n)}_d\\} \\in \\{0, \\dots, L\\}

(ties, as a point-mass guide gives, broken uniformly at random). If :math:`q(z|x) = p(z|x)`
then :math:`z^{(n)}` and the draws are exchangeable and :math:`r_n` is uniform on
:math:`\\{0..L\\}`: the ranks of the true values are uniform over the simulations. A guide
too narrow (overconfident) puts the truth outside its draws: a U-shaped histogram, a
rank variance above the uniform's :math:`((L+1)^2 - 1)/12`; a guide too wide gives a hump,
a variance below it; a biased one, a slope. Each histogram of ``bins`` bins is tested for
uniformity by Pearson's chi-square (``scipy.stats.chisquare``, Bonferroni over all
dimensions); the variance ratio is tested against its large-sample spread
(:math:`\\operatorname{Var}\\hat\\sigma^2 \\approx 1/(180\\,n)` for normalised ranks) to label
the guide ``under``- or ``over``-dispersed. The guide's joint draws are used, so for a
hierarchical guide each site is calibrated against its marginal under :math:`q`. SBC is
blind to a guide that ignores :math:`x` and returns the prior: that guide passes. The figure
of the record is :func:`ppl_vae.figures.calibration.rank_histograms`.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import torch
from pyro import poutine
from scipy import stats

from ppl_vae import traces
from ppl_vae.errors import UserError
from ppl_vae.measure.ais import simulate
from ppl_vae.measure.metrics import eval_mode, seeded
from ppl_vae.programs import Programs


def guide_draws(pair: Programs, args: tuple, draws: int) -> dict[str, torch.Tensor]:
    """``draws`` joint draws of the guide per example, ``(L, B, k)`` per latent site."""
    batch = args[0].shape[0]

    def run(fn):
        with pair.scope():
            return poutine.trace(fn).get_trace(*args)

    def fast():
        fn = traces.in_particle_plate(pair.guide, draws, -(pair.max_plate_nesting + 1))
        tr = run(fn)
        return {n: tr.nodes[n]["value"].reshape(draws, batch, -1) for n in pair.latent_sites}

    def slow():
        trs = [run(pair.guide) for _ in range(draws)]
        return {
            n: torch.stack([t.nodes[n]["value"].reshape(batch, -1) for t in trs])
            for n in pair.latent_sites
        }

    return pair.vectorized("guide_draws", fast, slow)


def ranks(truth: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Rank of ``truth`` ``(N, k)`` among ``draws`` ``(L, N, k)``, ties broken at random."""
    below = (draws < truth).sum(0)
    ties = (draws == truth).sum(0)
    return below + (torch.rand(truth.shape, device=truth.device) * (ties + 1)).floor().long()


def _dimension(r: np.ndarray, draws: int, bins: int, threshold: float) -> dict:
    n = len(r)
    edges = np.arange(draws + 1) * bins // (draws + 1)  # the bin of each rank value
    counts = np.bincount(edges[r], minlength=bins)
    expected = np.bincount(edges, minlength=bins) / (draws + 1) * n
    p_value = float(stats.chisquare(counts, expected).pvalue)
    u = r / draws
    ratio = float(u.var() / (((draws + 1) ** 2 - 1) / (12 * draws**2)))
    z = (u.var() - 1 / 12) / math.sqrt(1 / (180 * n))
    spread = "under" if z > 3 else "over" if z < -3 else "ok"
    return {
        "histogram": counts.tolist(),
        "expected": expected.tolist(),
        "p_value": p_value,
        "dispersion": ratio,
        "spread": spread,
        "bias": float(u.mean() - 0.5),
        "passed": p_value >= threshold,
    }


def calibrate(
    pair: Programs,
    like: torch.Tensor,
    y: torch.Tensor | None = None,
    n: int = 1000,
    draws: int = 99,
    bins: int = 10,
    alpha: float = 0.01,
    seed: int = 0,
) -> dict:
    """SBC of ``pair``'s guide on ``n`` simulations (``like``: rows the programs accept,
    values ignored, repeated to ``n``; ``y``: their labels). Returns a JSON-ready record:
    ``sites[name]`` a list per dimension of ``histogram``, ``expected``, ``p_value``,
    ``dispersion`` (rank variance / the uniform's), ``spread`` (``under``/``over``/``ok``:
    the guide too narrow / too wide), ``bias`` and ``passed``; overall ``passed``."""
    if draws < 1 or not 1 <= bins <= draws + 1 or n < 2:
        raise UserError("SBC needs draws >= 1, 1 <= bins <= draws + 1 and n >= 2")
    if pair.global_sites:
        raise UserError(
            f"{pair.name} has global latent sites ({', '.join(pair.global_sites)}) shared by "
            "all simulations, so per-simulation ranks of its latents are not calibration"
        )
    rows = torch.arange(n, device=like.device) % like.shape[0]
    like, y = like[rows], (None if y is None else y[rows])
    with eval_mode(pair), seeded(seed, like.device), torch.no_grad():
        with pyro.validation_enabled(False):
            z, x = simulate(pair, pair.eval_args(like, y))
            q = guide_draws(pair, pair.eval_args(x, y), draws)
        if any(z[s].shape[0] != n for s in pair.latent_sites):
            raise UserError(f"{pair.name} has a latent site outside the data plate")
        per_site = {s: ranks(z[s].reshape(n, -1), q[s]).cpu().numpy() for s in pair.latent_sites}
    total = sum(r.shape[1] for r in per_site.values())
    threshold = alpha / total
    sites = {
        s: [_dimension(r[:, d], draws, bins, threshold) for d in range(r.shape[1])]
        for s, r in per_site.items()
    }
    passed = all(d["passed"] for dims in sites.values() for d in dims)
    return {
        "simulations": n,
        "draws": draws,
        "bins": bins,
        "alpha": alpha,
        "threshold": threshold,
        "sites": sites,
        "passed": passed,
    }
