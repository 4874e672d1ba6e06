"""Posterior analysis: NUTS and the guide against PPCA's exact posterior; the CLI's files."""

from __future__ import annotations

import json
import math

import arviz as az
import numpy as np
import pytest
import torch

from ppl_vae.models.ppca import PPCA
from ppl_vae import analysis, reference
from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.train import TrainConfig, fit


@pytest.fixture(scope="module")
def ppca(synthetic) -> PPCA:
    """Trained in two phases of Adam: the guide mean ends within ~0.2 posterior sd."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = PPCA(synthetic.x_dim, latent_dim=2)
    fit(m, synthetic, TrainConfig(epochs=60, batch_size=128, lr=0.03, progress=False, device="cpu"))
    fit(
        m, synthetic, TrainConfig(epochs=40, batch_size=500, lr=0.002, progress=False, device="cpu")
    )
    return m.eval()


def exact(m: PPCA, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        post = m.exact_posterior(x)
        return post.mean.double().numpy(), post.variance.sqrt().double().numpy()


def test_nuts_and_guide_match_the_exact_posterior(ppca, synthetic):
    """Tolerances: NUTS mean within 5 Monte Carlo standard errors (sd / sqrt(ESS)) of the
    exact mean and its sd within 20%; the guide mean within 0.35 exact posterior sd and
    its sd within 15% (the guide is diagonal, the exact posterior nearly so at the optimum)."""
    x = synthetic.x_test[:2]
    mean, sd = exact(ppca, x)
    for j in range(2):
        run = reference.nuts_point(ppca, x[j], num_samples=200, warmup=150, chains=2, seed=j)
        assert dict(run.posterior.sizes) == {"chain": 2, "draw": 200, "latent": 2}
        row = reference.compare(ppca, x[j], run)
        mcse = sd[j] / np.sqrt(row["ess_bulk_min"])
        assert row["ess_bulk_min"] > 50 and row["rhat_max"] < 1.05
        assert np.all(np.abs(np.array(row["nuts_mean"]) - mean[j]) < 5 * mcse)
        assert np.all(np.abs(np.array(row["nuts_sd"]) / sd[j] - 1) < 0.2)
        assert np.all(np.abs(np.array(row["guide_mean"]) - mean[j]) < 0.35 * sd[j])
        assert np.all(np.abs(np.array(row["guide_sd"]) / sd[j] - 1) < 0.15)
        assert row["w2"] < 0.5 * sd[j].max() and row["divergences"] == 0


def test_psis_khat_is_small_for_a_good_guide(ppca, synthetic):
    """A near-exact guide: k-hat < 0.5 for at least 80% of 40 points; the per-point gap
    log p(x) - ELBO (= KL(q || p(z|x))) is small and non-negative on average; the IW
    estimate from the same draws matches the closed-form log p(x)."""
    x = synthetic.x_test[:40]
    d = analysis.psis(ppca, x, draws=500, seed=0)
    assert d["khat"].shape == (40,)
    assert (d["khat"] < analysis.KHAT_GOOD).mean() >= 0.8
    assert 0 <= d["gap"].mean() < 0.3
    with torch.no_grad():
        log_p = ppca.marginal().log_prob(x).double().numpy()
    assert abs(d["log_p"].mean() - log_p.mean()) < 0.05


def test_khat_flags_a_bad_guide(synthetic):
    """An untrained PPCA's guide is far from its posterior: most k-hat values exceed 0.7."""
    m = PPCA(synthetic.x_dim, latent_dim=2).eval()
    d = analysis.psis(m, synthetic.x_test[:20], draws=500)
    assert (d["khat"] > analysis.KHAT_BAD).mean() >= 0.8


def test_gaussian_distances_match_closed_forms():
    m1, m2 = np.array([0.0]), np.array([3.0])
    s1, s2 = np.array([[4.0]]), np.array([[1.0]])
    assert math.isclose(reference.gaussian_w2(m1, s1, m2, s2), math.hypot(3.0, 2.0 - 1.0))
    # KL(N(0,4) || N(3,1)) = log(1/2) + (4 + 9) / 2 - 1/2
    assert math.isclose(reference.gaussian_kl(m1, s1, m2, s2), math.log(0.5) + 6.5 - 0.5)
    eye = np.eye(3)
    assert reference.gaussian_w2(np.zeros(3), eye, np.zeros(3), eye) < 1e-6


def test_inference_data_has_named_dims(ppca, synthetic):
    idata = analysis.inference_data(ppca, synthetic.x_test[:3], [5, 6, 7], draws=4000, seed=0)
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "point", "latent")
    assert list(z.point.values) == [5, 6, 7] and list(z.latent.values) == ["z0", "z1"]
    assert idata.prior["z"].dims == z.dims
    q_mean = ppca.posterior(synthetic.x_test[:3]).mean.detach().numpy()
    np.testing.assert_allclose(z.mean(("chain", "draw")).values, q_mean, atol=0.02)
    assert abs(float(idata.prior["z"].std()) - 1) < 0.03  # prior draws are N(0, I)


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
        "60",
        "--nuts-warmup",
        "60",
    ]
    assert main(args) == 0
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
    assert dict(idata.posterior["z"].sizes) == {"chain": 1, "draw": 200, "point": 6, "latent": 2}
    assert idata.prior["z"].dims == ("chain", "draw", "point", "latent")
    nuts = az.from_netcdf(out / "nuts.nc")
    assert dict(nuts.posterior["z"].sizes) == {"chain": 2, "draw": 60, "point": 1, "latent": 2}
    report = json.loads((out / "report.json").read_text())
    khat = np.array(report["khat"])
    assert len(khat) == 6 and report["khat_share_above_0.7"] == (khat > 0.7).mean()
    (row,) = report["nuts"]
    assert row["point"] == report["points"][0] and row["w2"] >= 0
    assert "k-hat" in capsys.readouterr().out


def test_cli_analyze_refuses_bad_input(tiny_run, tmp_path, capsys):
    assert main(["analyze", str(tiny_run), "--points", "100000"]) == 2
    assert "--points" in capsys.readouterr().err
    assert main(["analyze", str(tiny_run), "--points", "3", "--nuts-points", "4"]) == 2
    assert "--nuts-points" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(UserError, match="draws"):
        analysis.psis(PPCA(3, 1), torch.randn(2, 3), draws=5)
