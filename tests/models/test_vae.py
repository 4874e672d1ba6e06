"""The VAE as a Pyro program, its likelihoods, and the reparameterised gradient."""

from __future__ import annotations

import math

import pytest
import torch
from ppl_vae.models.blocks import likelihoods
from ppl_vae.models.vae import VAE
from pyro import poutine

from ppl_vae import traces
from ppl_vae.errors import UserError
from ppl_vae.infer.elbo import make_elbo
from ppl_vae.infer.objective import Objective
from ppl_vae.programs import from_object


def elbo_module(vae, x, kind="trace"):
    return Objective(from_object(vae, x), make_elbo(kind))


def log_prob_terms(vae, x):
    return traces.terms(from_object(vae, x), (x,))


def test_programs_have_the_stated_sites():
    vae = VAE(x_dim=64, latent_dim=3, hidden=(32,))
    x = torch.rand(5, 64)
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    assert guide.nodes["z"]["fn"].has_rsample
    assert model.nodes["z"]["fn"].batch_shape == (5,) and model.nodes["z"]["fn"].event_shape == (3,)
    assert model.nodes["x"]["is_observed"]
    assert torch.equal(model.nodes["z"]["value"], guide.nodes["z"]["value"])


def test_gradients_reach_the_encoder_through_the_reparameterised_sample():
    """log p(x|z) depends on the encoder only through z = mu + sigma * eps: with a
    reparameterised sample its gradient reaches every encoder weight."""
    vae = VAE(x_dim=64, latent_dim=2, hidden=(16,))
    x = torch.rand(8, 64)
    terms = log_prob_terms(vae, x)
    terms["log_lik"].sum().backward()
    for name, p in vae.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Chain rule through z = loc + scale * eps: d/dloc = d/dz and d/dscale = eps * d/dz.
    vae.zero_grad()
    outputs = []

    def keep(module, args, out):
        for t in out:
            t.retain_grad()
        outputs.append(out)

    vae.encoder.register_forward_hook(keep)
    x = torch.rand(4, 64)
    tr = poutine.trace(vae.guide).get_trace(x)
    z = tr.nodes["z"]["value"]
    vae.likelihood(z).log_prob(x).sum().backward()
    loc, scale = outputs[0]
    z_leaf = z.detach().requires_grad_()
    (dz,) = torch.autograd.grad(vae.likelihood(z_leaf).log_prob(x).sum(), z_leaf)
    eps = (z - loc) / scale
    assert torch.allclose(loc.grad, dz, atol=1e-6)
    assert torch.allclose(scale.grad, eps.detach() * dz, atol=1e-5)


def test_elbo_module_is_minus_elbo_from_traces():
    vae = VAE(x_dim=64, latent_dim=2)
    x = torch.rand(6, 64)
    torch.manual_seed(3)
    loss = elbo_module(vae, x)(x)
    torch.manual_seed(3)
    terms = log_prob_terms(vae, x)
    elbo = (terms["log_lik"] + terms["log_prior"] - terms["log_q"]).sum()
    assert torch.allclose(loss, -elbo, rtol=1e-5)


def test_generation_skips_the_encoder():
    vae = VAE(x_dim=64, latent_dim=2)
    called = []
    vae.encoder.register_forward_hook(lambda *a: called.append(1))
    out = vae.generate(7)
    assert out.shape == (7, 64) and not called
    assert ((out >= 0) & (out <= 1)).all()


def test_gaussian_likelihood_matches_the_normal_density():
    lik = likelihoods.make("gaussian")
    out = torch.randn(3, 8)
    x = torch.randn(3, 4)
    loc, raw = out.chunk(2, -1)
    scale = torch.nn.functional.softplus(raw) + lik.min_scale
    expected = (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(lik.distribution(out).log_prob(x), expected, atol=1e-5)
    fixed = likelihoods.make("gaussian:0.5")
    assert fixed.out_features(4) == 4
    assert torch.allclose(fixed.distribution(loc).base_dist.scale, torch.full_like(loc, 0.5))


@pytest.mark.parametrize("name", likelihoods.LIKELIHOODS)
def test_every_likelihood_trains_a_step(name):
    vae = VAE(x_dim=16, latent_dim=2, hidden=(8,), likelihood=name)
    x = torch.rand(4, 16)
    loss = elbo_module(vae, x)(x)
    loss.backward()
    assert torch.isfinite(loss)
    assert vae.decode(torch.zeros(1, 2)).shape == (1, 16)


def test_bernoulli_refuses_values_outside_unit_interval():
    vae = VAE(x_dim=4, latent_dim=2)
    with pytest.raises(UserError, match=r"\[0, 1\].*--likelihood gaussian"):
        vae.check(torch.tensor([[0.0, 0.5, 1.5, 0.2]]))
    with pytest.raises(UserError, match="rows of 4"):
        vae.check(torch.zeros(2, 5))
    with pytest.raises(UserError, match="unknown likelihood"):
        likelihoods.make("poisson")
