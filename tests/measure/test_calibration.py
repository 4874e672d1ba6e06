"""Simulation-based calibration: pPCA's exact guide passes, its halved scale fails, a
two-site program works, and the figure is written."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppl_vae.models.ppca import PPCA
from torch import nn

from ppl_vae.errors import UserError
from ppl_vae.figures.calibration import rank_histograms
from ppl_vae.measure.calibration import calibrate, ranks
from ppl_vae.programs import from_object


def exact_ppca(x_dim: int = 5, latent_dim: int = 2, sigma: float = 0.5) -> PPCA:
    """pPCA whose guide is its exact posterior (orthogonal W makes it diagonal)."""
    m = PPCA(x_dim, latent_dim, init_scale=sigma).eval()
    m.set_exact_guide()
    return m


def dims(result):
    return [d for site in result["sites"].values() for d in site]


def test_ranks_count_draws_below_and_break_ties():
    truth = torch.tensor([[0.5, 0.0]])
    draws = torch.tensor([[[0.1, 0.0]], [[0.9, 0.0]], [[0.2, 0.0]]])
    r = ranks(truth, draws)
    assert r[0, 0] == 2 and 0 <= r[0, 1] <= 3


def test_exact_guide_passes():
    m = exact_ppca()
    out = calibrate(from_object(m, torch.zeros(2, 5)), torch.zeros(1, 5), n=1000, draws=99)
    assert out["passed"], [d["p_value"] for d in dims(out)]
    assert all(d["spread"] == "ok" and sum(d["histogram"]) == 1000 for d in dims(out))
    assert [len(d["histogram"]) for d in dims(out)] == [10, 10]


def test_halved_scale_fails_as_under_dispersed():
    m = exact_ppca()
    with torch.no_grad():
        m.log_s.sub_(math.log(2.0))
    out = calibrate(from_object(m, torch.zeros(2, 5)), torch.zeros(1, 5), n=1000, draws=99)
    assert not out["passed"]
    assert all(not d["passed"] and d["spread"] == "under" for d in dims(out))
    assert all(d["dispersion"] > 1.2 for d in dims(out))


def test_doubled_scale_fails_as_over_dispersed():
    m = exact_ppca()
    with torch.no_grad():
        m.log_s.add_(math.log(2.0))
    out = calibrate(from_object(m, torch.zeros(2, 5)), torch.zeros(1, 5), n=1000, draws=99)
    assert not out["passed"] and all(d["spread"] == "over" for d in dims(out))


class TwoSites(nn.Module):
    """z1 -> z2 -> x, linear Gaussian; the guide's q(z2 | z1, x) has a scale parameter."""

    def __init__(self, scale: float):
        super().__init__()
        self.register_buffer("A", torch.randn(4, 3))
        self.scale = scale

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z1.sum(-1, keepdim=True).expand(*z1.shape[:-1], 3)
            z2 = pyro.sample("z2", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z2 @ self.A.T, 0.5).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z1.sum(-1, keepdim=True).expand(*z1.shape[:-1], 3)
            pyro.sample("z2", dist.Normal(loc, self.scale).to_event(1))


@pytest.mark.parametrize("scale, passes", [(1.0, True), (0.3, False)])
def test_two_latent_sites(scale, passes, tmp_path):
    """The guide = the prior passes (SBC's blind spot); shrinking q(z2|z1) fails at z2."""
    prog = TwoSites(scale)
    out = calibrate(from_object(prog, torch.zeros(2, 4)), torch.zeros(3, 4), n=600, draws=59)
    assert sorted(out["sites"]) == ["z1", "z2"]
    assert [len(v) for v in out["sites"].values()] == [2, 3]
    assert out["passed"] is passes
    assert all(d["passed"] for d in out["sites"]["z1"])
    path = rank_histograms(out, tmp_path / "sbc.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_bad_settings_are_user_errors():
    pair = from_object(exact_ppca(), torch.zeros(2, 5))
    with pytest.raises(UserError):
        calibrate(pair, torch.zeros(1, 5), n=10, draws=5, bins=20)
