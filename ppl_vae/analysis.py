"""Posterior analysis of a trained model: guide draws, PSIS k-hat, and NUTS references.

Three questions about the amortised guide :math:`q_\\phi(z|x)`, asked per test point:

1. **What does it say?** Draws :math:`z \\sim q(z|x)` (group ``posterior``) and
   :math:`z \\sim p(z)` (group ``prior``) in one ArviZ ``InferenceData`` with dims
   ``(chain, draw, point, latent)``, summarised by ``az.summary``.
2. **Is it a usable proposal?** The Pareto :math:`\\hat k` of the importance ratios
   :math:`\\log w_s = \\log p(x, z_s) - \\log q(z_s|x)` over :math:`S` guide draws
   (``az.psislw``; Yao et al. 2018): :math:`\\hat k < 0.5` good, :math:`0.5`–:math:`0.7`
   usable, :math:`> 0.7` unreliable. The same weights give the per-point gap
   :math:`\\log \\hat p(x) - \\widehat{\\mathrm{ELBO}}(x) \\approx
   \\mathrm{KL}(q(z|x) \\,\\|\\, p(z|x))`.
3. **How far is it from the true posterior?** NUTS on :math:`p(z|x) \\propto p(x|z)p(z)`
   for one point at a time, decoder frozen, several chains; R-hat and ESS from
   ``az.from_pyro``; the guide against Gaussian fits of the NUTS draws by the
   2-Wasserstein distance
   :math:`W_2^2 = \\|m_1 - m_2\\|^2 + \\operatorname{tr}(S_1 + S_2 - 2(S_2^{1/2} S_1
   S_2^{1/2})^{1/2})` and :math:`\\mathrm{KL}(q \\,\\|\\, \\mathcal{N}_{\\text{NUTS}})`.

Example::

    >>> import torch
    >>> from ppl_vae.models.ppca import PPCA
    >>> m = PPCA(x_dim=5, latent_dim=2)
    >>> idata = inference_data(m, torch.randn(3, 5), [0, 1, 2], draws=50)
    >>> dict(idata.posterior.sizes)
    {'chain': 1, 'draw': 50, 'point': 3, 'latent': 2}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import arviz as az
import numpy as np
import torch

from ppl_vae.autoencoder import Autoencoder
from ppl_vae.errors import UserError
from ppl_vae.evaluate import seeded
from ppl_vae.importance import check_estimable, log_weights
from ppl_vae.reference import compare, latent_names, nuts_point, stack_nuts

KHAT_GOOD, KHAT_BAD = 0.5, 0.7


def choose_points(n_total: int, n: int, seed: int = 0) -> list[int]:
    """``n`` distinct example indices out of ``n_total``, sorted, chosen by ``seed``."""
    if not 1 <= n <= n_total:
        raise UserError(f"--points must lie in 1..{n_total} (the size of the split), got {n}")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


@torch.no_grad()
def inference_data(
    module: Autoencoder,
    x: torch.Tensor,
    points: Sequence[int],
    draws: int = 1000,
    chains: int = 1,
    seed: int = 0,
) -> az.InferenceData:
    """Guide draws ``posterior.z`` and prior draws ``prior.z`` (independent per point),
    both ``(chain, draw, point, latent)``, plus ``observed_data.x``."""
    with seeded(seed, x.device):
        q = module.posterior(module.guide_input(x))
        z_q = q.sample((chains, draws))
        z_p = module.prior().sample((chains, draws, x.shape[0]))
    coords = {"point": list(points), "latent": latent_names(module.latent_dim)}
    coords["pixel"] = list(range(x.shape[1]))
    return az.from_dict(
        posterior={"z": z_q.cpu().numpy()},
        prior={"z": z_p.cpu().numpy()},
        observed_data={"x": x.cpu().numpy()},
        coords=coords,
        dims={"z": ["point", "latent"], "x": ["point", "pixel"]},
    )


@torch.no_grad()
def psis(module: Autoencoder, x: torch.Tensor, draws: int = 1000, seed: int = 0) -> dict:
    """Per point: Pareto ``khat`` of the guide's importance ratios, the MC ``elbo``, the
    IW ``log_p`` from the same ``draws`` and their difference ``gap`` (all ``(P,)``)."""
    check_estimable(module, x)
    if draws < 20:
        raise UserError(f"--draws must be at least 20 for a Pareto fit, got {draws}")
    was_training = module.training
    module.eval()
    try:
        with seeded(seed, x.device):
            lw = log_weights(module, x, draws).T.double().cpu().numpy()  # (P, S)
    finally:
        module.train(was_training)
    _, khat = az.psislw(lw)
    log_p = torch.from_numpy(lw).logsumexp(-1).numpy() - math.log(draws)
    elbo = lw.mean(-1)
    return {"khat": np.asarray(khat), "elbo": elbo, "log_p": log_p, "gap": log_p - elbo}


def plot_figures(
    out, khat: np.ndarray, guide: az.InferenceData, nuts: dict[int, az.InferenceData]
) -> list:
    """``khat.png`` and, for the first NUTS point, ``density.png`` (NUTS vs guide per latent
    dimension) and ``pair.png`` (the first two latent dimensions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.scatter(range(len(khat)), khat, s=12)
    for level, style in ((KHAT_GOOD, "--"), (KHAT_BAD, ":")):
        ax.axhline(level, color="k", ls=style, lw=0.8)
    ax.set(xlabel="test point (order of analysis)", ylabel="Pareto k-hat", title="PSIS k-hat")
    files.append(_save(fig, out / "khat.png"))
    if not nuts:
        return files
    point, run = next(iter(nuts.items()))
    z_n = run.posterior["z"].values.reshape(-1, run.posterior.sizes["latent"])
    z_q = guide.posterior["z"].sel(point=point).values.reshape(-1, z_n.shape[1])
    d = z_n.shape[1]
    fig, axes = plt.subplots(1, d, figsize=(3 * d, 2.6), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.hist(z_n[:, i], bins=40, density=True, histtype="step", label="NUTS")
        ax.hist(z_q[:, i], bins=40, density=True, histtype="step", label="guide q(z|x)")
        ax.set(xlabel=f"z{i}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"posterior of test point {point}")
    files.append(_save(fig, out / "density.png"))
    if d >= 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(z_q[:, 0], z_q[:, 1], s=3, alpha=0.3, label="guide q(z|x)")
        ax.scatter(z_n[:, 0], z_n[:, 1], s=3, alpha=0.3, label="NUTS")
        ax.set(xlabel="z0", ylabel="z1", title=f"test point {point}")
        ax.legend(fontsize=7, markerscale=3)
        files.append(_save(fig, out / "pair.png"))
    return files


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def analyze(
    module: Autoencoder,
    x_all: torch.Tensor,
    out,
    points: int = 50,
    draws: int = 1000,
    nuts_points: int = 3,
    chains: int = 2,
    seed: int = 0,
    nuts_samples: int = 500,
    nuts_warmup: int = 300,
) -> dict[str, Any]:
    """The whole analysis of ``points`` examples of ``x_all``, written to the folder ``out``:
    ``posterior.nc``, ``summary.csv``, ``nuts.nc``, ``nuts_summary.csv``, ``report.json``
    and PNG figures. Returns the report."""
    import json
    from pathlib import Path

    from ppl_vae.checkpoint import atomic_write_text

    if not 0 <= nuts_points <= points:
        raise UserError(f"--nuts-points must lie in 0..--points ({points}), got {nuts_points}")
    if chains < 1:
        raise UserError(f"--chains must be at least 1, got {chains}")
    idx = choose_points(x_all.shape[0], points, seed)
    x = x_all[idx]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    diag = psis(module, x, draws, seed)  # validates the model and --draws first
    idata = inference_data(module, x, idx, draws, 1, seed)
    idata.to_netcdf(str(out / "posterior.nc"))
    az.summary(idata, kind="stats").to_csv(out / "summary.csv")
    khat = diag["khat"]
    report: dict[str, Any] = {
        "points": idx,
        "draws": draws,
        "khat": khat.tolist(),
        "khat_share_above_0.5": float((khat > KHAT_GOOD).mean()),
        "khat_share_above_0.7": float((khat > KHAT_BAD).mean()),
        "khat_median": float(np.median(khat)),
        "khat_max": float(khat.max()),
        "mean_elbo": float(diag["elbo"].mean()),
        "mean_iw_log_p": float(diag["log_p"].mean()),
        "mean_gap_kl_q_to_posterior": float(diag["gap"].mean()),
        "nuts": [],
    }
    runs = {}
    for j in range(nuts_points):
        runs[idx[j]] = nuts_point(module, x[j], nuts_samples, nuts_warmup, chains, seed + j)
        row = {"point": idx[j], "gap_kl_q_to_posterior": float(diag["gap"][j])}
        row.update(khat=float(khat[j]), **compare(module, x[j], runs[idx[j]]))
        report["nuts"].append(row)
    if runs:
        nuts = stack_nuts(runs, latent_names(module.latent_dim))
        nuts.to_netcdf(str(out / "nuts.nc"))
        az.summary(nuts).to_csv(out / "nuts_summary.csv")
    report["nuts_settings"] = {"samples": nuts_samples, "warmup": nuts_warmup, "chains": chains}
    figures = plot_figures(out, khat, idata, runs)
    report["figures"] = [p.name for p in figures]
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    return report
