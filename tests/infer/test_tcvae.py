"""beta-TCVAE: the total-correlation estimate against the Gaussian closed form, the
objective at beta = 1 against the ELBO, and training through the CLI."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from ppl_vae.cli import main
from ppl_vae.infer.tcvae import total_correlation


def guide_trace(points: torch.Tensor, bandwidth: float):
    def guide():
        with pyro.plate("data", points.shape[0]):
            pyro.sample("z", dist.Normal(points, bandwidth).to_event(1))

    return poutine.trace(guide).get_trace()


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_total_correlation_matches_the_gaussian_closed_form(rho):
    """Codes from N(0, [[1, rho], [rho, 1]]) with narrow Gaussian guides: with N = 1 the
    minibatch-weighted estimate is a kernel density estimate of E log q(z) - sum_j E log
    q(z_j), whose limit is TC = -log(1 - rho^2) / 2 (0.51 nats at rho = 0.8)."""
    torch.manual_seed(0)
    m = 3000
    cov = torch.tensor([[1.0, rho], [rho, 1.0]])
    points = dist.MultivariateNormal(torch.zeros(2), cov).sample([m])
    tc = float(total_correlation(guide_trace(points, 0.15), dataset_size=1)) / m
    exact = -0.5 * math.log(1 - rho**2)
    assert tc == pytest.approx(exact, abs=0.08)


def test_total_correlation_is_differentiable_and_refuses_other_guides():
    points = torch.randn(64, 3, requires_grad=True)
    tc = total_correlation(guide_trace(points, 0.3), dataset_size=1000)
    (grad,) = torch.autograd.grad(tc, points)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    def delta_guide():
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Delta(torch.zeros(4, 2)).to_event(1))

    from ppl_vae.errors import UserError

    with pytest.raises(UserError, match="factorised Gaussian"):
        total_correlation(poutine.trace(delta_guide).get_trace(), 10)


def test_tcvae_trains_from_the_cli(tmp_path):
    common = ["train", "vae", "--data", "dsprites-small", "--latent-dim", "4", "--hidden", "32"]
    common += ["--epochs", "2", "--batch-size", "128", "--no-progress", "--seed", "0"]
    assert (
        main([*common, "--objective", "tcvae", "--beta", "6", "--out", str(tmp_path / "tc")]) == 0
    )
    metrics = json.loads((tmp_path / "tc" / "metrics.json").read_text())
    assert metrics["history"][-1]["beta"] == 6.0
    assert math.isfinite(metrics["test_elbo"])
    # a bad combination is one clear error
    assert main([*common, "--objective", "tcvae", "--num-particles", "2"]) == 2
