"""The latent distributions of the geometry models against independent oracles: mpmath's
Bessel function, Pyro's ``VonMises3D``, closed-form moments, Monte Carlo KL and the exact
derivative of an expectation (each Monte Carlo check within 4.5 standard errors); the
gamma-latent VAE's Gamma against the same closed forms."""

from __future__ import annotations

import math

import mpmath
import pyro.distributions as dist
import pytest
import torch
from ppl_vae.models.blocks.vmf import (
    HypersphericalUniform,
    VonMisesFisher,
    log_bessel_iv,
    log_sphere_area,
)
from torch.distributions import kl_divergence

DIMS_KAPPAS = [(2, 1.0), (3, 4.0), (5, 0.5), (5, 20.0), (10, 3.0), (32, 100.0)]


def vmf(d: int, kappa: float, seed: int = 0, n: int = 1) -> VonMisesFisher:
    torch.manual_seed(seed)
    loc = torch.nn.functional.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    return VonMisesFisher(loc, torch.full((n,), kappa, dtype=torch.float64).squeeze(0))


def within(samples: torch.Tensor, expected: torch.Tensor | float, z: float = 4.5) -> None:
    se = samples.std() / math.sqrt(samples.numel())
    assert abs(samples.mean() - expected) < z * se + 1e-9, (samples.mean(), expected, se)


@pytest.mark.parametrize("v", [0.0, 0.5, 1.5, 4.0, 15.0])
@pytest.mark.parametrize("k", [1e-4, 0.3, 7.0, 80.0, 2000.0])
def test_log_bessel_and_its_derivative_match_mpmath(v, k):
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    out = log_bessel_iv(v, kt)
    (grad,) = torch.autograd.grad(out, kt)
    exact = float(mpmath.log(mpmath.besseli(v, k)))
    exact_grad = float(mpmath.diff(lambda t: mpmath.log(mpmath.besseli(v, t)), k))
    assert out.item() == pytest.approx(exact, rel=1e-9, abs=1e-9)
    assert grad.item() == pytest.approx(exact_grad, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kappa", [0.01, 1.0, 30.0])
def test_vmf_in_three_dimensions_is_pyros_vonmises3d(kappa):
    q = vmf(3, kappa)
    x = torch.nn.functional.normalize(torch.randn(7, 3, dtype=torch.float64), dim=-1)
    expected = dist.VonMises3D(q.loc * kappa).log_prob(x)
    torch.testing.assert_close(q.log_prob(x), expected)


@pytest.mark.parametrize("d,kappa", DIMS_KAPPAS)
def test_density_integrates_to_one_and_samples_lie_on_the_sphere(d, kappa):
    q, p = vmf(d, kappa), HypersphericalUniform(d, torch.zeros((), dtype=torch.float64))
    z = p.sample([40000])  # E_uniform[q(z) / p(z)] = 1
    if kappa < 25:  # beyond, q is too narrow for uniform proposals
        within((q.log_prob(z) - p.log_prob(z)).exp(), 1.0)
    draws = q.rsample([1000])
    torch.testing.assert_close(draws.norm(dim=-1), torch.ones(1000, dtype=torch.float64))


@pytest.mark.parametrize("d,kappa", DIMS_KAPPAS)
def test_mean_resultant_length_of_draws_is_a_d(d, kappa):
    q = vmf(d, kappa, seed=1)
    w = q.rsample([20000]) @ q.loc
    a_d = math.exp(
        float(mpmath.log(mpmath.besseli(d / 2, kappa) / mpmath.besseli(d / 2 - 1, kappa)))
    )
    within(w, a_d)
    torch.testing.assert_close(q.mean, a_d * q.loc)


@pytest.mark.parametrize("d,kappa", DIMS_KAPPAS)
def test_closed_form_kl_to_uniform_matches_monte_carlo(d, kappa):
    q, p = vmf(d, kappa, seed=2), HypersphericalUniform(d)
    z = q.rsample([20000])
    within(q.log_prob(z) - p.log_prob(z), kl_divergence(q, p).item())
    assert kl_divergence(q, p).item() == pytest.approx(-q.entropy().item() + log_sphere_area(d))


@pytest.mark.parametrize("d,kappa", DIMS_KAPPAS)
def test_rsample_gradient_is_the_derivative_of_the_expectation(d, kappa):
    """f(z) = (c.z)^2 has E f = (c.mu)^2 E[w^2] + (1 - (c.mu)^2)(1 - E[w^2]) / (d - 1) with
    E[w^2] = 1 - (d - 1) A_d / kappa; its kappa-derivative by autograd through A_d against
    the mean of per-draw pathwise gradients."""
    q = vmf(d, kappa, seed=3, n=20000)
    c = torch.nn.functional.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    kappas = q.concentration.clone().requires_grad_(True)
    (per_draw,) = torch.autograd.grad(
        ((VonMisesFisher(q.loc, kappas).rsample() @ c) ** 2).sum(), kappas
    )
    k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    ew2 = 1 - (d - 1) * VonMisesFisher(q.loc[0], k).mean_resultant_length() / k
    cm = (c @ q.loc[0]) ** 2
    (exact,) = torch.autograd.grad(cm * ew2 + (1 - cm) * (1 - ew2) / (d - 1), k)
    within(per_draw, exact.item())


def test_shapes_expand_and_the_registered_kl_broadcast():
    q = VonMisesFisher(torch.nn.functional.normalize(torch.randn(4, 6), dim=-1), torch.rand(4) + 1)
    p = HypersphericalUniform(6, torch.zeros(())).expand([4])
    assert q.rsample([3]).shape == (3, 4, 6) and q.log_prob(q.rsample([3])).shape == (3, 4)
    assert p.sample().shape == (4, 6) and p.log_prob(p.sample()).shape == (4,)
    assert kl_divergence(q, p).shape == (4,) and q.expand([2, 4]).batch_shape == (2, 4)
    assert log_sphere_area(2) == pytest.approx(math.log(2 * math.pi))
    assert log_sphere_area(3) == pytest.approx(math.log(4 * math.pi))


@pytest.mark.parametrize("a,b", [(0.5, 1.0), (1.0, 0.1), (3.0, 2.0), (40.0, 5.0)])
def test_gamma_guide_gradient_and_kl_against_closed_forms(a, b):
    """d/da E[log z] = trigamma(a) by torch's implicit rsample gradient; the registered
    KL(Gamma(a, b) || Gamma(1, 1)), gamma-vae's default prior, against Monte Carlo."""
    torch.manual_seed(4)
    shape = torch.full((20000,), a, dtype=torch.float64, requires_grad=True)
    q = dist.Gamma(shape, torch.tensor(b, dtype=torch.float64))
    z = q.rsample()
    (per_draw,) = torch.autograd.grad(z.log().sum(), shape)
    within(per_draw, float(mpmath.psi(1, a)))
    p = dist.Gamma(torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    z = z.detach()
    within(q.log_prob(z) - p.log_prob(z), kl_divergence(q, p)[0].item())
