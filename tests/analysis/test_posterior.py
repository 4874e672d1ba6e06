"""Posterior analysis: NUTS and the guide against PPCA's exact posterior; any program pair
(a user-style two-site hierarchical VAE); the figures' content; the CLI's files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from ppl_vae.models.ppca import PPCA, maximum_likelihood
from torch import nn

from ppl_vae import traces
from ppl_vae.analysis import posterior as analysis
from ppl_vae.analysis import reference
from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import fit
from ppl_vae.programs import Programs, from_object
from ppl_vae.runs.analyze import write


def cfg(**kw) -> TrainConfig:
    return TrainConfig(progress=False, device="cpu", **kw)


@pytest.fixture(scope="module")
def ppca(synthetic) -> Programs:
    """PPCA at its closed-form maximum-likelihood solution (Tipping & Bishop) with the guide
    set to the exact posterior, which the diagonal guide can state there (W^T W is
    diagonal): q(z|x) = p(z|x). The oracle then tests the analysis, not training (the
    training oracles live in the suite's own tests)."""
    m = PPCA(synthetic.x_dim, latent_dim=2)
    mu, w, sigma2 = maximum_likelihood(synthetic.x_train, 2)
    m.set_parameters(w.float(), mu.float(), sigma2**0.5)
    m.set_exact_guide()
    return from_object(m, synthetic.x_test[:4]).eval()


def exact(pair: Programs, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    (m,) = pair.owners
    with torch.no_grad():
        post = m.exact_posterior(x)
        return post.mean.double().numpy(), post.variance.sqrt().double().numpy()


def test_nuts_and_guide_match_the_exact_posterior(ppca, synthetic):
    """Tolerances: NUTS mean within 5 Monte Carlo standard errors (sd / sqrt(ESS)) of the
    exact mean and its sd within 20% (one point, 2 chains of 200 draws); the guide's draws
    (4000 per point, 5 points) give the exact mean within 0.1 posterior sd and the exact sd
    within 5%. NUTS leaves every parameter as it was and samples only the latent site."""
    x = synthetic.x_test[:5]
    mean, sd = exact(ppca, x)
    guide = analysis.inference_data(ppca, (x,), list(range(5)), draws=4000, seed=1)
    for j in range(5):
        q = reference.flat_draws(guide.posterior.sel(point=j), ["z"])
        assert np.all(np.abs(q.mean(0) - mean[j]) < 0.1 * sd[j])
        assert np.all(np.abs(q.std(0) / sd[j] - 1) < 0.05)
    before = {k: v.clone() for k, v in ppca.state_dict().items()}
    flags = [p.requires_grad for p in ppca.parameters()]
    run = reference.nuts_point(ppca, (x[:1],), 200, 100, chains=2, seed=0)
    assert list(run.posterior.data_vars) == ["z"]
    assert dict(run.posterior.sizes) == {"chain": 2, "draw": 200, "z_dim_0": 1, "z_dim_1": 2}
    row = reference.compare(reference.flat_draws(guide.posterior.sel(point=0), ["z"]), run, ["z"])
    mcse = sd[0] / np.sqrt(row["ess_bulk_min"])
    assert row["ess_bulk_min"] > 50 and row["rhat_max"] < 1.05
    assert np.all(np.abs(np.array(row["nuts_mean"]) - mean[0]) < 5 * mcse)
    assert np.all(np.abs(np.array(row["nuts_sd"]) / sd[0] - 1) < 0.2)
    assert np.all(np.abs(np.array(row["guide_mean"]) - mean[0]) < 0.1 * sd[0])
    assert row["divergences"] == 0
    for k, v in ppca.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in ppca.parameters()] == flags


def test_psis_khat_is_small_for_a_good_guide(ppca, synthetic):
    """A near-exact guide: k-hat < 0.5 for at least 80% of 40 points; the per-point gap
    log p(x) - ELBO (= KL(q || p(z|x))) is small and non-negative on average; the IW
    estimate from the same draws matches the closed-form log p(x)."""
    x = synthetic.x_test[:40]
    d = analysis.psis(ppca, (x,), draws=500, seed=0, points=range(100, 140))
    assert d["khat"].dims == ("point",) and list(d["khat"].point.values) == list(range(100, 140))
    assert (d["khat"].values < analysis.KHAT_GOOD).mean() >= 0.8
    assert 0 <= d["gap"].mean() < 0.3
    (m,) = ppca.owners
    with torch.no_grad():
        log_p = m.marginal().log_prob(x).double().numpy()
    assert abs(d["log_p"].mean() - log_p.mean()) < 0.05


def test_khat_flags_a_bad_guide(synthetic):
    """An untrained PPCA's guide is far from its posterior: most k-hat values exceed 0.7."""
    x = synthetic.x_test[:20]
    pair = from_object(PPCA(synthetic.x_dim, latent_dim=2), x).eval()
    d = analysis.psis(pair, (x,), draws=500)
    assert (d["khat"].values > analysis.KHAT_BAD).mean() >= 0.8


def test_inference_data_has_named_dims(ppca, synthetic):
    x = synthetic.x_test[:3]
    idata = analysis.inference_data(ppca, (x,), [5, 6, 7], draws=4000, seed=0)
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "point", "z_dim")
    assert list(z.point.values) == [5, 6, 7] and list(z.z_dim.values) == [0, 1]
    assert idata.prior["z"].dims == z.dims
    assert idata.observed_data["x"].dims == ("point", "x_dim")
    np.testing.assert_allclose(idata.observed_data["x"].values, x.numpy())
    q_mean = traces.codes(ppca, (x,)).numpy()
    np.testing.assert_allclose(z.mean(("chain", "draw")).values, q_mean, atol=0.02)
    assert abs(float(idata.prior["z"].std()) - 1) < 0.03  # prior draws are N(0, I)


# -- any program pair: a user's two-site hierarchical VAE ------------------------------------
class TwoLayerVAE(nn.Module):
    """z1 ~ N(0, I), z2 | z1 ~ N(f(z1), 0.5^2 I), x | z2 ~ N(g(z2), sigma^2 I); the guide
    q(z1|x) q(z2|x, z1). Written as in Pyro's tutorial: a plain nn.Module, pyro.module."""

    def __init__(self, x_dim: int, z1: int = 2, z2: int = 2, hidden: int = 16, flat=False):
        super().__init__()
        self.z1, self.z2, self.flat = z1, z2, flat
        self.prior2 = nn.Linear(z1, z2)
        self.dec = nn.Sequential(nn.Linear(z2, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.enc1 = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z1))
        self.enc2 = nn.Linear(x_dim + z1, 2 * z2)
        self.log_sigma = nn.Parameter(torch.zeros(()))

    def model(self, x):
        pyro.module("generative", self)
        n = x.shape[0]
        with pyro.plate("data", n):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(n, self.z1), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(self.prior2(z1), 0.5).to_event(1))
            if self.flat:  # a program that does not run under a particle plate
                z2 = z2.reshape(n, self.z2)
            loc = self.dec(z2)
            pyro.sample("x", dist.Normal(loc, self.log_sigma.exp()).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("generative", self)
        with pyro.plate("data", x.shape[0]):
            h = self.enc1(x)
            z1 = pyro.sample(
                "z1", dist.Normal(h[..., : self.z1], h[..., self.z1 :].exp()).to_event(1)
            )
            xz = torch.cat([x.expand(*z1.shape[:-1], -1), z1], -1)
            h2 = self.enc2(xz)
            loc, scale = h2[..., : self.z2], h2[..., self.z2 :].exp()
            pyro.sample("z2", dist.Normal(loc, scale).to_event(1))


def _backend() -> object:
    """The backend setting as stored, without resolving it (which would itself set it)."""
    return dict.__getitem__(matplotlib.rcParams, "backend")


def test_analysis_of_a_user_program_with_two_latent_sites(synthetic, tmp_path):
    """Draws, PSIS, NUTS and figures cover both latent sites; nothing global changes."""
    import matplotlib.pyplot as plt  # imported by ArviZ anyway; used only to count figures

    backend, figs = _backend(), plt.get_fignums()
    local = pyro.settings.get("module_local_params")
    torch.manual_seed(0)
    user = TwoLayerVAE(synthetic.x_dim)
    pair = fit(user.model, user.guide, synthetic, cfg(epochs=3, batch_size=100, lr=0.01)).pair
    result = analysis.analyze(
        pair,
        synthetic.x_test,
        points=5,
        draws=100,
        nuts_points=1,
        chains=2,
        nuts_samples=30,
        nuts_warmup=30,
    )
    assert _backend() is backend and plt.get_fignums() == figs
    assert pyro.settings.get("module_local_params") == local

    r, idata, nuts = result.report, result.posterior, result.nuts
    for group in (idata.posterior, idata.prior):
        assert set(group.data_vars) == {"z1", "z2"}
        assert dict(group["z1"].sizes) == {"chain": 1, "draw": 100, "point": 5, "z1_dim": 2}
        assert group["z2"].dims == ("chain", "draw", "point", "z2_dim")
    assert abs(float(idata.prior["z1"].std()) - 1) < 0.15  # ancestral draws: z1 ~ N(0, I)
    assert dict(nuts.posterior["z2"].sizes) == {"chain": 2, "draw": 30, "point": 1, "z2_dim": 2}
    assert r["latent_values"] == ["z1[0]", "z1[1]", "z2[0]", "z2[1]"]
    (row,) = r["nuts"]
    assert len(row["guide_mean"]) == len(row["nuts_sd"]) == 4 and np.isfinite(
        row["gap_kl_q_to_posterior"]
    )
    assert r["figures"] == ["khat.png", "density.png", "pair.png"]
    write(result, tmp_path)  # the analyze job's writer: every file, atomically
    assert all((tmp_path / name).stat().st_size > 0 for name in r["figures"])
    written = az.from_netcdf(tmp_path / "nuts.nc")
    assert written.posterior["z2"].shape == nuts.posterior["z2"].shape
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries
    summary = (tmp_path / "summary.csv").read_text()
    assert "z1[" in summary and "z2[" in summary

    khat = xr.DataArray(r["khat"], dims="point", coords={"point": r["points"]})
    figs_out = analysis.figures(khat, idata, nuts, pair.latent_sites)
    (ax,) = figs_out["khat.png"].axes
    assert len(ax.collections[0].get_offsets()) == 5  # one marker per point
    assert "k" in ax.get_ylabel() and ax.get_title() == "PSIS k-hat of the guide"
    levels = sorted(y for seg in ax.collections[1].get_segments() for y in {seg[0][1]})
    assert levels == [analysis.KHAT_GOOD, analysis.KHAT_BAD]

    dens = figs_out["density.png"].axes
    assert [a.get_title() for a in dens] == ["z1\n0", "z1\n1", "z2\n0", "z2\n1"]
    assert all(len(a.lines) >= 2 for a in dens)  # guide and NUTS curves in each panel
    legend = [t.get_text() for t in dens[0].get_legend().get_texts()]
    assert legend == [analysis.GUIDE_LABEL, analysis.NUTS_LABEL]

    pair_axes = [a for a in figs_out["pair.png"].axes if a.axison]
    assert len(pair_axes) == 6  # the lower triangle of 4 latent values
    assert all(len(a.collections) == 2 for a in pair_axes)  # guide and NUTS draws
    labels = {a.get_xlabel() for a in pair_axes} | {a.get_ylabel() for a in pair_axes}
    assert {"z1\n0", "z1\n1", "z2\n0", "z2\n1"} <= labels


def test_programs_that_do_not_vectorise_are_drawn_one_trace_at_a_time(synthetic):
    x = synthetic.x_test[:3]
    torch.manual_seed(0)
    user = TwoLayerVAE(synthetic.x_dim, flat=True)
    pair = Programs(user.model, user.guide, x)
    idata = analysis.inference_data(pair, (x,), [0, 1, 2], draws=30)
    assert pair._vectorizes["draws/guide"] is False and not any(pair._vectorizes.values())
    assert dict(idata.posterior["z2"].sizes) == {"chain": 1, "draw": 30, "point": 3, "z2_dim": 2}
    assert dict(idata.prior["z1"].sizes) == {"chain": 1, "draw": 30, "point": 3, "z1_dim": 2}
    assert analysis.psis(pair, (x,), draws=30)["khat"].shape == (3,)


def test_programs_that_take_labels_get_them(tmp_path):
    """A conditional program model(x, y): prior p(z|y) = N(mu_y, I). The labels reach the
    guide draws, the prior draws (per point), PSIS and NUTS."""
    mus = torch.tensor([[-4.0], [4.0]])

    def model(x, y):
        scale = pyro.param("scale", torch.ones(()), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mus[y], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, scale).to_event(1), obs=x)

    def guide(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x + mus[y]) / 2, 0.7).to_event(1))

    y = torch.tensor([0, 1] * 5)
    x = mus[y] + torch.randn(10, 1)
    pair = Programs(model, guide, (x, y))
    assert pair.takes_labels
    result = analysis.analyze(
        pair, x, y, points=6, draws=200, nuts_points=1, chains=1, nuts_samples=60
    )
    r, idata = result.report, result.posterior
    prior_mean = idata.prior["z"].mean(("chain", "draw")).values[:, 0]
    np.testing.assert_allclose(prior_mean, mus[y[r["points"]], 0].numpy(), atol=0.3)
    assert max(r["khat"]) < analysis.KHAT_BAD  # the guide is the exact posterior here
    (row,) = r["nuts"]
    assert abs(row["nuts_mean"][0] - row["guide_mean"][0]) < 0.3 and row["rhat_max"] is None
    with pytest.raises(UserError, match="takes labels"):
        analysis.analyze(pair, x, points=3, nuts_points=0)


# -- the command ----------------------------------------------------------------------------
def test_cli_analyze_writes_netcdf_summary_report_and_plots(tiny_run, capsys):
    args = [
        "analyze",
        str(tiny_run),
        "--points",
        "6",
        "--draws",
        "200",
        "--nuts-points",
        "1",
        "--chains",
        "2",
        "--nuts-samples",
        "40",
        "--nuts-warmup",
        "30",
    ]
    backend = _backend()
    assert main(args) == 0
    assert _backend() is backend
    out = tiny_run / "analysis"
    for name in (
        "posterior.nc",
        "summary.csv",
        "nuts.nc",
        "nuts_summary.csv",
        "report.json",
        "khat.png",
        "density.png",
        "pair.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    idata = az.from_netcdf(out / "posterior.nc")
    assert dict(idata.posterior["z"].sizes) == {"chain": 1, "draw": 200, "point": 6, "z_dim": 2}
    assert idata.prior["z"].dims == ("chain", "draw", "point", "z_dim")
    nuts = az.from_netcdf(out / "nuts.nc")
    assert dict(nuts.posterior["z"].sizes) == {"chain": 2, "draw": 40, "point": 1, "z_dim": 2}
    report = json.loads((out / "report.json").read_text())
    khat = np.array(report["khat"])
    assert len(khat) == 6 and report["khat_share_above_0.7"] == (khat > 0.7).mean()
    (row,) = report["nuts"]
    assert row["point"] == report["points"][0] and row["khat"] == khat[0]
    # The guide against NUTS by moments, the gap by PSIS: no distances between Gaussian fits
    # of the two sets of draws (at these sizes their sampling bias is as large as the gap).
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "R-hat" in line).split()
    assert header == ["point", "R-hat", "ESS", "div", "shift/sd", "k-hat", "gap"]
    page = (tiny_run / "report.html").read_text()
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for text in (json.dumps(report), page, readme):
        assert not re.search(r"\b(w2|kl_guide_to_nuts_fit|wasserstein)\b", text, re.I)
    assert "gap_kl_q_to_posterior" in page


def test_cli_analyze_refuses_bad_input(tiny_run, tmp_path, capsys):
    assert main(["analyze", str(tiny_run), "--points", "100000"]) == 2
    assert "--points" in capsys.readouterr().err
    assert main(["analyze", str(tiny_run), "--points", "3", "--nuts-points", "4"]) == 2
    assert "--nuts-points" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    x = torch.randn(2, 3)
    with pytest.raises(UserError, match="draws"):
        analysis.psis(from_object(PPCA(3, 1), x), (x,), draws=5)


def global_model(x):
    g = pyro.sample("g", dist.Normal(0.0, 1.0))  # outside the data plate: a global latent
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(g + z[:, None], 1.0).expand(x.shape).to_event(1), obs=x)


def global_guide(x):
    pyro.sample("g", dist.Normal(pyro.param("m", torch.tensor(0.8)), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.mean(-1), 1.0))


def test_a_program_with_global_latents_gets_a_psis_note_and_the_rest_of_its_analysis():
    """PSIS k-hat and the per-point IW bound are undefined for a shared latent (one note
    saying so); the guide draws, NUTS on a point and the figures of the local site run."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    pair = Programs(global_model, global_guide, x[:2])
    result = analysis.analyze(
        pair, x, points=4, draws=40, nuts_points=1, chains=1, nuts_samples=20, nuts_warmup=20
    )
    r = result.report
    assert "global latent sites (g)" in r["psis_note"] and "khat" not in r
    assert set(result.posterior.posterior.data_vars) >= {"z"}
    (row,) = r["nuts"]
    assert "khat" not in row and "skipped" not in row and len(row["nuts_mean"]) == 1
    assert "khat.png" not in r["figures"] and "density.png" in r["figures"]
    with pytest.raises(UserError, match="at least 20"):
        analysis.analyze(pair, x, points=4, draws=10)
