"""The two-level models (hvae, ladder-vae, hvamp-vae) against closed forms: the Ladder's
precision-weighted merge is the normalised product of two Gaussian densities; the model's
prior marginal p(z1) = E_{p(z2)} p(z1|z2) is, for a linear top-down mean and a constant
scale, Gaussian with moments from p(z2)'s; the ladder's guide reuses the model's own
p(z1|z2) network; and the importance-weighted log p(x) of a trained two-level model lies
between its ELBO and the log-likelihood's maximum."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from ppl_vae.models.blocks.hierarchy import precision_merge

from ppl_vae import registry

TWO_LEVEL = ["hvae", "ladder-vae", "hvamp-vae"]
SMALL = dict(latent_dim=3, top_dim=2, hidden=(8,), top_hidden=())


def build(name: str, x_dim: int = 12):
    torch.manual_seed(0)
    return registry.build(name, x_dim=x_dim, **SMALL)[0].__self__


@pytest.mark.parametrize("shape", [(5,), (4, 3)])
def test_precision_merge_is_the_normalised_product_of_the_two_densities(shape):
    g = torch.Generator().manual_seed(1)
    la, lb = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in "ab")
    sa, sb = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.2 for _ in "ab")
    loc, scale = precision_merge(la, sa, lb, sb)
    normal = torch.distributions.Normal
    z = torch.randn((50, *shape), generator=g, dtype=torch.float64) * 3
    # log N(z; loc, scale) - log N(z; la, sa) - log N(z; lb, sb) does not depend on z ...
    gap = normal(loc, scale).log_prob(z) - normal(la, sa).log_prob(z) - normal(lb, sb).log_prob(z)
    torch.testing.assert_close(gap, gap[:1].expand_as(gap), atol=1e-9, rtol=0)
    # ... and equals -log of the product's integral, log N(la; lb, sqrt(sa^2 + sb^2)).
    log_norm = normal(lb, (sa**2 + sb**2).sqrt()).log_prob(la)
    torch.testing.assert_close(gap[0], -log_norm, atol=1e-9, rtol=0)


def prior_moments(m) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of p(z2): N(0, I), or the equal-weight mixture of diagonals."""
    p = m.prior()
    if not isinstance(p, torch.distributions.MixtureSameFamily):
        return p.mean, torch.diag(p.variance)
    comp = p.component_distribution.base_dist
    loc, var = comp.loc, comp.scale**2
    mean = loc.mean(0)
    centred = loc - mean
    return mean, torch.diag(var.mean(0)) + centred.T @ centred / len(loc)


@pytest.mark.parametrize("name", TWO_LEVEL)
@torch.no_grad()
def test_model_program_samples_the_marginal_prior_of_z1(name):
    """With p(z1|z2) = N(W z2 + b, s^2) (the top-down net linear, its scale weights zeroed)
    p(z1) = N(W m + b, W C W^T + diag s^2) for p(z2)'s mean m and covariance C: the z1
    draws of the model program match these moments."""
    m = build(name)
    linear = m.top_down.body[0]
    d1 = m.latent_dim
    linear.weight[d1:].zero_()  # the raw scale no longer depends on z2
    w, b = linear.weight[:d1], linear.bias[:d1]
    s2 = torch.nn.functional.softplus(linear.bias[d1:]) + m.top_down.min_scale
    mean2, cov2 = prior_moments(m)
    mean, cov = w @ mean2 + b, w @ cov2 @ w.T + torch.diag(s2**2)

    n = 40000
    pyro.set_rng_seed(0)
    tr = pyro.poutine.trace(m.model).get_trace(torch.zeros(n, 12))
    z1 = tr.nodes["z1"]["value"]
    assert z1.shape == (n, d1)
    se = (torch.diag(cov) / n).sqrt()
    assert ((z1.mean(0) - mean).abs() < 5 * se).all(), (z1.mean(0), mean)
    torch.testing.assert_close(torch.cov(z1.T), cov, atol=0.05 * cov.abs().max(), rtol=0.05)
    gen = m.generate(7)
    assert gen.shape == (7, 12) and ((gen > 0) & (gen < 1)).all()


def test_the_ladder_guide_merges_with_the_models_own_top_down_network():
    """q(z1|z2, x) is the merge of the bottom-up message and p(z1|z2) -- computed by the
    generative network itself, so the guide's log q(z1) has a gradient in its weights."""
    m = build("ladder-vae")
    x = torch.rand(4, 12).bernoulli()
    tr = pyro.poutine.trace(m.guide).get_trace(x)
    q1, z2 = tr.nodes["z1"]["fn"].base_dist, tr.nodes["z2"]["value"]
    (l1, s1), _ = m.bottom_up(x)
    loc, scale = precision_merge(l1, s1, *m.top_down(z2))
    torch.testing.assert_close(q1.loc, loc)
    torch.testing.assert_close(q1.scale, scale)
    tr.nodes["z1"]["fn"].log_prob(tr.nodes["z1"]["value"].detach()).sum().backward()
    assert m.top_down.body[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", TWO_LEVEL)
def test_iw_log_px_of_a_trained_two_level_model_lies_above_its_elbo(name):
    """Trained briefly on digits: ELBO <= IW log p(x) (K = 200) <= 0 for binary pixels, and
    the IW estimate with K = 1 is the ELBO's own Monte Carlo estimate (same mean within
    noise)."""
    from ppl_vae import data
    from ppl_vae.infer import TrainConfig, fit
    from ppl_vae.measure.importance import iw_log_likelihood

    ds = data.load("digits", binarize="dynamic")
    m = build(name, ds.x_dim)
    result = fit(m.model, m.guide, ds, TrainConfig(epochs=2, batch_size=64, progress=False))
    x = ds.x_test[:64]
    with torch.no_grad():
        k1 = iw_log_likelihood(result.pair, x, None, 1, seed=0)
        k200 = iw_log_likelihood(result.pair, x, None, 200, seed=0)
    assert k200.shape == (64,) and torch.isfinite(k200).all() and (k200 < 0).all()
    gain = (k200 - k1).mean()
    assert gain > 0, gain
    assert abs(k1.mean() - result.last["test_elbo"]) < 6 * k1.std() / math.sqrt(64) + 1.0
