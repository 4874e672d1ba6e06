"""Reference posteriors by NUTS, and how far the amortised guide is from them.

For one data point at a time, NUTS samples :math:`p(z|x) \\propto p(x|z)\\,p(z)` over
*every* latent site of the program pair: the pair's own ``model`` applied to that one
example (``pair.model(*pair.eval_args(x[j:j+1], y[j:j+1]))``), run inside the pair's
param-store scope. The parameters are held fixed: NUTS differentiates the potential
energy with respect to the latent sites only and never steps a parameter; they are also
taken out of autograd for the run (``requires_grad`` off, restored afterwards) so the
potential's graph stays small. Param sites are not sample sites, so NUTS samples exactly
the latent sites. Chains run one after another in this process through
``pyro.infer.MCMC(num_chains=...)`` (see :class:`SequentialMCMC`), converted by
``az.from_pyro``; R-hat and ESS come from ``az.summary``.

The guide :math:`q(z|x)` is compared with the NUTS draws over all latent sites
concatenated (the guide's moments are those of its draws, so a hierarchical guide's
dependence between sites counts) by their moments: the largest mean shift in NUTS
standard deviations and the ratio of the standard deviations, with R-hat, ESS and
divergences. The gap itself, :math:`\\mathrm{KL}(q \\,\\|\\, p(z|x)) = \\log p(x) -
\\mathrm{ELBO}`, is the PSIS estimate beside each row (:func:`ppl_vae.analysis.posterior.psis`,
with its :math:`\\hat k`). The 2-Wasserstein distance and KL between Gaussian fits of the
two sets of draws are not reported: at the default sizes (1000 guide draws, 2 x 500 NUTS
draws) their sampling bias is as large as the gap they measure (8 dimensions, a true KL of
0.027 nats: the fitted KL averages 0.067, the fitted W2 0.30 for a true 0.20).

Example::

    >>> import numpy as np
    >>> mean, cov = moments(np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> mean.tolist(), cov.tolist()
    ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import arviz as az
import numpy as np
import pyro
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.api import _UnarySampler

from ppl_vae.errors import UserError
from ppl_vae.measure.metrics import frozen, seeded
from ppl_vae.programs import Programs


def dim_name(site: str) -> str:
    """The ArviZ dimension holding one example's values of latent site ``site``."""
    return f"{site}_dim"


def dim_labels(pair: Programs) -> list[str]:
    """One label per latent value, all sites concatenated in guide order: ``z[0], ...``."""
    return [f"{n}[{i}]" for n, k in zip(pair.latent_sites, pair.latent_sizes) for i in range(k)]


class SequentialMCMC(MCMC):
    """``pyro.infer.MCMC`` whose ``num_chains`` chains are drawn one after another in this
    process: NumPyro's ``chain_method="sequential"``, which Pyro's ``MCMC`` lacks (it
    forks one process per chain whenever the machine has the cores, and falls back to
    its in-process sequential sampler only when it has not). Forked workers would break a
    pair on CUDA and make results depend on the core count; the in-process sampler is
    Pyro's own ``_UnarySampler``, the one it uses itself in that fall-back."""

    def __init__(self, kernel, num_samples: int, warmup_steps: int, num_chains: int):
        super().__init__(kernel, num_samples, warmup_steps, num_chains=1, disable_progbar=True)
        self.num_chains = num_chains
        self._diagnostics = [None] * num_chains
        self.sampler = _UnarySampler(kernel, num_samples, warmup_steps, num_chains, True)


def nuts_point(
    pair: Programs,
    args: tuple,
    num_samples: int = 500,
    warmup: int = 300,
    chains: int = 2,
    seed: int = 0,
) -> az.InferenceData:
    """NUTS on :math:`p(z | x)` for ONE example (``args``: the programs' arguments for a
    batch of one) with the parameters fixed. Returns ``az.from_pyro``'s InferenceData:
    ``posterior.<site>`` of shape ``(chain, draw, *site_shape)`` for every latent site,
    ``sample_stats.diverging``."""
    if chains < 1 or num_samples < 1 or warmup < 0:
        raise UserError("NUTS needs chains >= 1, samples >= 1 and warmup >= 0")
    if args[0].shape[0] != 1:
        raise UserError(f"NUTS runs on one example at a time, got a batch of {args[0].shape[0]}")

    def point_model():
        return pair.model(*args)

    kernel = NUTS(point_model, max_plate_nesting=pair.max_plate_nesting)
    mcmc = SequentialMCMC(kernel, num_samples, warmup, chains)
    # The programs were validated when traced (Programs) and trained; Pyro's per-call
    # argument checks would cost a quarter of NUTS's time.
    with frozen(pair), pair.scope(), seeded(seed, args[0].device):
        with pyro.validation_enabled(False):
            mcmc.run()
        idata = az.from_pyro(mcmc, log_likelihood=False)
    return idata  # discrete sites are enumerated out: posterior holds the continuous ones


def per_point(idata: az.InferenceData, sites: Sequence[str]) -> dict[str, np.ndarray]:
    """A one-example NUTS result as arrays ``(chain, draw, 1, k)`` per latent site of
    ``sites`` it drew."""
    post = idata.posterior
    c, d = post.sizes["chain"], post.sizes["draw"]
    return {n: post[n].values.reshape(c, d, 1, -1) for n in sites if n in post}


def stack(runs: dict[int, az.InferenceData], sites: Sequence[str]) -> az.InferenceData:
    """Per-point NUTS results as one InferenceData: ``posterior.<site>`` with dims
    ``(chain, draw, point, <site>_dim)`` for the sites of ``sites`` every point's run drew
    (a point's own trace may have fewer: a shorter sequence), and
    ``sample_stats.diverging`` ``(chain, draw, point)``."""
    arrays = [per_point(r, sites) for r in runs.values()]
    common = [n for n in sites if all(n in a for a in arrays)]
    posterior = {n: np.concatenate([a[n] for a in arrays], axis=2) for n in common}
    diverging = np.stack([r.sample_stats["diverging"].values for r in runs.values()], axis=2)
    dims = {n: ["point", dim_name(n)] for n in common}
    dims["diverging"] = ["point"]
    coords: dict[str, Any] = {"point": list(runs)}
    coords.update({dim_name(n): list(range(posterior[n].shape[-1])) for n in common})
    return az.from_dict(
        posterior=posterior, sample_stats={"diverging": diverging}, coords=coords, dims=dims
    )


def flat_draws(posterior, sites: Sequence[str]) -> np.ndarray:
    """Draws of the latent sites as one ``(chain * draw, D)`` matrix, sites concatenated in
    order; ``posterior`` is an ``xarray.Dataset`` of one point (no ``point`` dim left)."""
    c, d = posterior.sizes["chain"], posterior.sizes["draw"]
    parts = [posterior[n].values.reshape(c * d, -1) for n in sites]
    return np.concatenate(parts, -1).astype(np.float64)


def moments(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance ``(D,)``, ``(D, D)`` of draws ``(N, D)``."""
    return draws.mean(0), np.atleast_2d(np.cov(draws, rowvar=False))


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def compare(guide_draws: np.ndarray, nuts: az.InferenceData, sites: Sequence[str]) -> dict:
    """The guide against NUTS for one point, over all latent sites concatenated:
    ``guide_draws`` ``(N, D)`` are draws of :math:`q(z|x)`, ``nuts`` is
    :func:`nuts_point`'s result. Moments, R-hat, ESS and divergences."""
    m_n, s_n = moments(flat_draws(nuts.posterior, sites))
    m_q, s_q = moments(np.asarray(guide_draws, dtype=np.float64))
    sd_n, sd_q = np.sqrt(np.diag(s_n)), np.sqrt(np.diag(s_q))
    diag = az.summary(nuts, var_names=list(sites), kind="diagnostics")
    chains = nuts.posterior.sizes["chain"]
    return {
        "nuts_mean": m_n.tolist(),
        "nuts_sd": sd_n.tolist(),
        "guide_mean": m_q.tolist(),
        "guide_sd": sd_q.tolist(),
        "mean_shift_in_nuts_sd": float(np.max(np.abs(m_q - m_n) / sd_n)),
        "sd_ratio_guide_over_nuts": (sd_q / sd_n).tolist(),
        "rhat_max": _num(diag["r_hat"].max()) if chains > 1 else None,
        "ess_bulk_min": _num(diag["ess_bulk"].min()),
        "ess_tail_min": _num(diag["ess_tail"].min()),
        "divergences": int(nuts.sample_stats["diverging"].values.sum()),
    }
