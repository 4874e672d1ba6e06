"""Reference posteriors by NUTS, and how far the amortised guide is from them.

For one data point at a time, NUTS samples :math:`p(z|x) \\propto p(x|z)\\,p(z)` with the
trained decoder frozen (the model's own ``model`` program conditioned on that point),
several chains, converted with ``az.from_pyro``. The guide :math:`q(z|x)` is compared with
a Gaussian fit of the NUTS draws by the 2-Wasserstein distance

.. math::

    W_2^2 = \\|m_1 - m_2\\|^2 + \\operatorname{tr}\\big(S_1 + S_2
            - 2 (S_2^{1/2} S_1 S_2^{1/2})^{1/2}\\big)

and by :math:`\\mathrm{KL}(q \\,\\|\\, \\mathcal{N}_{\\text{NUTS}})`: the amortisation gap
made visible.

Example::

    >>> import numpy as np
    >>> round(gaussian_w2(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)), 4)
    1.4142
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from ppl_vae.autoencoder import Autoencoder
from ppl_vae.errors import UserError


def latent_names(d: int) -> list[str]:
    """Coordinate names of the latent dimension: ``z0, z1, ...``."""
    return [f"z{i}" for i in range(d)]


@contextlib.contextmanager
def frozen(module: Autoencoder):
    """Hold every parameter fixed (no gradients), the module in eval mode, torch on one
    thread."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training, threads = module.training, torch.get_num_threads()
    torch.set_num_threads(1)  # one point at a time: thread hand-offs cost more than they save
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
        module.train(was_training)
        torch.set_num_threads(threads)


def nuts_point(
    module: Autoencoder,
    x1: torch.Tensor,
    num_samples: int = 500,
    warmup: int = 300,
    chains: int = 2,
    seed: int = 0,
) -> az.InferenceData:
    """NUTS on :math:`p(z | x)` for ONE point ``x1`` (shape ``(D,)``) with the decoder
    frozen; ``chains`` chains run one after another (each ``az.from_pyro``, joined along
    ``chain``). ``posterior.z`` has shape ``(chain, draw, latent)``."""
    if chains < 1 or num_samples < 1 or warmup < 0:
        raise UserError("NUTS needs chains >= 1, samples >= 1 and warmup >= 0")

    def point_model(x):
        return module.model(x)

    parts = []
    with frozen(module):
        for c in range(chains):
            pyro.set_rng_seed(seed + 1000 * c)
            mcmc = MCMC(NUTS(point_model), num_samples, warmup, disable_progbar=True)
            mcmc.run(x1.unsqueeze(0))
            parts.append(az.from_pyro(mcmc, log_likelihood=False))
    idata = parts[0] if chains == 1 else az.concat(*parts, dim="chain")
    z = idata.posterior["z"].values[:, :, 0, :]  # drop the plate of one example
    stats = {"diverging": idata.sample_stats["diverging"].values}
    return az.from_dict(
        posterior={"z": z},
        sample_stats=stats,
        coords={"latent": latent_names(module.latent_dim)},
        dims={"z": ["latent"]},
    )


def gaussian_w2(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """2-Wasserstein distance between :math:`\\mathcal{N}(m_1, S_1)` and
    :math:`\\mathcal{N}(m_2, S_2)`."""
    from scipy.linalg import sqrtm

    r2 = sqrtm(s2)
    cross = np.real(sqrtm(r2 @ s1 @ r2))
    w2 = float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * cross))
    return math.sqrt(max(w2, 0.0))


def gaussian_kl(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """:math:`\\mathrm{KL}(\\mathcal{N}(m_1, S_1) \\,\\|\\, \\mathcal{N}(m_2, S_2))`."""
    d = len(m1)
    s2_inv = np.linalg.inv(s2)
    diff = m2 - m1
    _, ld1 = np.linalg.slogdet(s1)
    _, ld2 = np.linalg.slogdet(s2)
    return float(0.5 * (np.trace(s2_inv @ s1) + diff @ s2_inv @ diff - d + ld2 - ld1))


def guide_moments(module: Autoencoder, x1: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of :math:`q(z|x)` for one point."""
    with torch.no_grad():
        q = module.posterior(module.guide_input(x1.unsqueeze(0)))
        mean = q.mean[0].double().cpu().numpy()
        try:
            cov = q.covariance_matrix[0]
        except AttributeError:
            cov = torch.diag_embed(q.variance[0])
    return mean, cov.double().cpu().numpy()


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def compare(module: Autoencoder, x1: torch.Tensor, nuts: az.InferenceData) -> dict[str, Any]:
    """NUTS against the guide for one point: moments, R-hat, ESS, divergences, W2, KL."""
    z = nuts.posterior["z"].values.reshape(-1, module.latent_dim).astype(np.float64)
    m_n, s_n = z.mean(0), np.atleast_2d(np.cov(z, rowvar=False))
    m_q, s_q = guide_moments(module, x1)
    sd_n, sd_q = np.sqrt(np.diag(s_n)), np.sqrt(np.diag(s_q))
    ridge = 1e-9 * np.eye(len(m_n))
    chains = nuts.posterior.sizes["chain"]
    return {
        "nuts_mean": m_n.tolist(),
        "nuts_sd": sd_n.tolist(),
        "guide_mean": m_q.tolist(),
        "guide_sd": sd_q.tolist(),
        "mean_shift_in_nuts_sd": float(np.max(np.abs(m_q - m_n) / sd_n)),
        "sd_ratio_guide_over_nuts": (sd_q / sd_n).tolist(),
        "w2": gaussian_w2(m_q, s_q, m_n, s_n),
        "kl_guide_to_nuts_fit": gaussian_kl(m_q, s_q + ridge, m_n, s_n + ridge),
        "rhat_max": _num(az.rhat(nuts)["z"].max()) if chains > 1 else None,
        "ess_bulk_min": _num(az.ess(nuts, method="bulk")["z"].min()),
        "ess_tail_min": _num(az.ess(nuts, method="tail")["z"].min()),
        "divergences": int(nuts.sample_stats["diverging"].values.sum()),
    }


def stack_nuts(runs: dict[int, az.InferenceData], latent: list[str]) -> az.InferenceData:
    """Per-point NUTS results as one InferenceData with dims (chain, draw, point, latent)."""
    z = np.stack([r.posterior["z"].values for r in runs.values()], axis=2)
    div = np.stack([r.sample_stats["diverging"].values for r in runs.values()], axis=2)
    return az.from_dict(
        posterior={"z": z},
        sample_stats={"diverging": div},
        coords={"point": list(runs), "latent": latent},
        dims={"z": ["point", "latent"], "diverging": ["point"]},
    )
