"""AIS and BDMC: pPCA's closed-form log p(x) as the oracle, a two-site linear-Gaussian
program, and a small trained VAE against the importance-weighted estimate."""

from __future__ import annotations

import pyro
import pytest
import torch
from helpers import TwoSites
from ppl_vae.models.ppca import PPCA
from ppl_vae.models.vae import VAE

from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import fit
from ppl_vae.measure.ais import ais_log_likelihood, bdmc, sigmoid_schedule
from ppl_vae.measure.importance import iw_log_likelihood
from ppl_vae.programs import from_object


def exact_ppca(x_dim: int = 5, latent_dim: int = 2, sigma: float = 0.5) -> PPCA:
    """pPCA whose guide is its exact posterior (orthogonal W makes it diagonal)."""
    m = PPCA(x_dim, latent_dim, init_scale=sigma).eval()
    m.set_exact_guide()
    return m


def test_schedule_runs_from_zero_to_one():
    b = sigmoid_schedule(10)
    assert b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())


def test_exact_guide_gives_the_exact_value_with_no_spread():
    m = exact_ppca()
    x = m.marginal().sample([6]).detach()
    r = ais_log_likelihood(from_object(m, x[:2]), x, steps=10, chains=3, leapfrog=1)
    exact = m.marginal().log_prob(x).detach()
    assert torch.allclose(r.log_likelihood, exact, atol=1e-3)
    assert float(r.se.max()) < 1e-3 and r.evaluations == 3 * (1 + 9 * 2)


def test_bdmc_sandwiches_the_closed_form_on_ppca():
    """From the prior (the harder start), 1000 steps: forward AIS and the reverse chain
    from the exact z both lie within 0.1 nats of log p(x), on the right side within noise."""
    m = PPCA(5, 2, init_scale=0.5).eval()
    pair = from_object(m, torch.zeros(2, 5))
    out = bdmc(pair, torch.zeros(16, 5), steps=1000, chains=16, leapfrog=1, start="prior")
    exact = m.marginal().log_prob(out["x"]).detach()
    lower, upper = out["lower"], out["upper"]
    below, above = lower.log_likelihood - exact, upper.log_likelihood - exact
    assert abs(float(below.mean())) < 0.1 and abs(float(above.mean())) < 0.1
    assert float(below.mean()) < 3 * float(below.std() / 4)  # 16 points: SE = sd / 4
    assert float(above.mean()) > -3 * float(above.std() / 4)
    assert 0.4 < lower.acceptance < 0.95 and 0.4 < upper.acceptance < 0.95


def test_two_latent_sites_are_annealed_jointly():
    prog = TwoSites()
    x = prog.marginal().sample([8])
    r = ais_log_likelihood(from_object(prog, x[:2]), x, steps=200, chains=8, leapfrog=1)
    exact = float(prog.marginal().log_prob(x).mean())
    assert abs(r.mean - exact) < 0.3, (r.mean, exact)


class OptionalLabel(torch.nn.Module):
    """The exact pPCA as a program with an optional label (``model(x, ys=None)``, as Pyro's
    SSVAE): given a label it scores x + 5 instead, so a label passed shows in log p."""

    def __init__(self):
        super().__init__()
        self.m = exact_ppca()

    def model(self, x, ys=None):
        self.m.model(x if ys is None else x + 5)

    def guide(self, x, ys=None):
        self.m.guide(x if ys is None else x + 5)


def test_ais_scores_the_same_arguments_as_the_iw_estimate():
    """For a program whose labels are optional, IW scores x alone (``eval_args``, as Pyro's
    SSVAE is tested); AIS and BDMC must estimate the same log p(x), not that of (x, y)."""
    prog = OptionalLabel().eval()
    x = prog.m.marginal().sample([6]).detach()
    y = torch.arange(6) % 2
    pair = from_object(prog, (x[:2], y[:2]))
    assert pair.labels_optional
    exact = prog.m.marginal().log_prob(x).detach()
    iw = iw_log_likelihood(pair, x, y, num_samples=4, seed=0)
    r = ais_log_likelihood(pair, x, y, steps=10, chains=3, leapfrog=1)
    assert torch.allclose(iw, exact, atol=1e-3) and torch.allclose(
        r.log_likelihood, exact, atol=1e-3
    )
    out = bdmc(pair, x, y, steps=10, chains=3, leapfrog=1)
    assert torch.isfinite(out["lower"].log_likelihood).all()


def test_ais_is_at_least_iw_at_equal_compute_on_a_trained_vae(digits):
    pyro.set_rng_seed(0)
    m = VAE(digits.x_dim, latent_dim=8, hidden=(32,))
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, beta=0.2, progress=False, device="cpu")
    pair = fit(m.model, m.guide, digits, cfg).pair
    x = digits.x_test[:16]
    r = ais_log_likelihood(pair, x, steps=100, chains=4, leapfrog=2, step_size=0.1)
    iw = iw_log_likelihood(pair, x, num_samples=r.evaluations, seed=1)
    elbo = iw_log_likelihood(pair, x, num_samples=1, seed=1)
    diff = r.log_likelihood - iw
    assert float(diff.mean()) > -3 * float(diff.std() / 4)
    assert r.mean > float(elbo.mean()) + 1.0


def test_bad_settings_are_user_errors():
    m = PPCA(5, 2)
    pair = from_object(m, torch.zeros(2, 5))
    with pytest.raises(UserError):
        ais_log_likelihood(pair, torch.zeros(2, 5), steps=0)
    with pytest.raises(UserError):
        ais_log_likelihood(pair, torch.zeros(2, 5), steps=2, start="posterior")
