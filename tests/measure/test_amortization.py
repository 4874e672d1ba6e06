"""The amortisation gap: zero for pPCA's exact guide, positive for a small trained VAE,
per-point parameters for every site of a two-site program."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import TwoSites
from ppl_vae.models.ppca import PPCA
from ppl_vae.models.vae import VAE

from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import fit
from ppl_vae.measure.amortization import amortization_gap
from ppl_vae.programs import Programs, from_object


def exact_ppca(x_dim: int = 5, latent_dim: int = 2, sigma: float = 0.5) -> PPCA:
    """pPCA whose guide is its exact posterior (orthogonal W makes it diagonal)."""
    m = PPCA(x_dim, latent_dim, init_scale=sigma).eval()
    m.set_exact_guide()
    return m


def test_exact_guide_has_no_gap():
    m = exact_ppca()
    x = m.marginal().sample([10]).detach()
    r = amortization_gap(from_object(m, x[:2]), x)
    exact = float(m.marginal().log_prob(x).detach().mean())
    assert r["converged"] and r["points"] == 10
    assert abs(r["encoder_elbo"] - exact) < 1e-3  # the exact guide's ELBO is log p(x)
    assert 0 <= r["amortization_gap"] < 3 * r["amortization_gap_se"] + 0.01
    assert abs(r["approximation_gap"]) < 0.02 and abs(r["log_likelihood"] - exact) < 0.02


def test_a_trained_vae_has_a_positive_gap_with_a_standard_error(digits):
    pyro.set_rng_seed(0)
    m = VAE(digits.x_dim, latent_dim=4, hidden=(32,))
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, progress=False, device="cpu")
    pair = fit(m.model, m.guide, digits, cfg).pair
    r = amortization_gap(pair, digits.x_test[:10])
    assert r["amortization_gap_se"] > 0
    assert r["amortization_gap"] > 3 * r["amortization_gap_se"]
    assert r["approximation_gap"] > 0
    total = r["log_likelihood"] - r["encoder_elbo"]
    assert total == pytest.approx(r["approximation_gap"] + r["amortization_gap"], abs=1e-4)


def test_two_latent_sites_each_get_per_point_parameters():
    prog = TwoSites(noise=0.5)
    x = torch.randn(6, 2) @ prog.A.T * 1.5
    r = amortization_gap(from_object(prog, x[:2]), x, steps=600, lr=0.05)
    assert r["amortization_gap"] > 1.0 and r["approximation_gap"] > -0.05
    assert r["best_elbo"] > r["encoder_elbo"]


def test_an_unsupported_guide_family_is_a_user_error():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Gamma(x.new_ones(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(0.0, s[:, None]).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("s", dist.Gamma(x.new_ones(x.shape[0]), 1.0))

    pair = Programs(model, guide, torch.randn(2, 2))
    with pytest.raises(UserError, match="Normal or Delta"):
        amortization_gap(pair, torch.randn(3, 2))
