"""Planar and radial flow guides (``nf-vae``): the density is the change of variables with
the paper's log-determinants, and the flows stay invertible on trained weights (issue 32,
item 3: pythae's planar flows do not; the ELBO is then no bound).

``test_nf_flow_guides_stay_invertible_on_trained_weights`` is the invertibility check for
these two flows, written to be merged into a parametrised list of flow guides."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from ppl_vae.models.nf_vae import NFVAE

from ppl_vae.infer import TrainConfig, fit

FLOWS = ["planar", "radial"]


def signed_log_det(flow: str, t, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(det J, margin)`` of one conditioned step at ``z``, by hand from the raw
    hypernetwork outputs: Rezende & Mohamed's eqs. 11-14 with Pyro's parameterisation.
    The margin is ``1 + w.u_hat`` (planar) or ``alpha + beta`` (radial)."""
    if flow == "planar":
        b, u, w = t._params()
        wu = (w * u).sum(-1, keepdim=True)
        u_hat = u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True)
        wu_hat = (w * u_hat).sum(-1)
        act = torch.tanh((w * z).sum(-1) + b.squeeze(-1))
        return 1 + (1 - act**2) * wu_hat, 1 + wu_hat
    z0, a, b = t._params()
    alpha = F.softplus(a).squeeze(-1)
    beta = -alpha + F.softplus(b).squeeze(-1)
    r = (z - z0).norm(dim=-1)
    h = 1 / (alpha + r)
    det = (1 + beta * h) ** (z.shape[-1] - 1) * (1 + beta * h - beta * h**2 * r)
    return det, alpha + beta


def check_invertible(m: NFVAE, x: torch.Tensor, draws: int, whole: bool = True) -> None:
    """Over ``draws`` posterior draws per row: every step's determinant, by hand, is
    positive (one sign) and its log equals Pyro's ``log_abs_det_jacobian``, which is finite;
    the inverse maps each output back; every margin is >= 0; the guide's log-density is
    finite and (``whole``) the same from the cache and through the inverse of the whole
    flow (a composition of near-singular steps is too ill-conditioned for that in float32)."""
    with torch.no_grad():
        base, h = m.base(x)
        z = base.sample([draws])  # (S, B, D)
        total = torch.zeros(z.shape[:-1])
        for t in m.transforms(h):
            det, margin = signed_log_det(m.flow, t, z)
            y = t(z)
            lad = t.log_abs_det_jacobian(z, y)
            assert torch.isfinite(lad).all()
            assert (det > 0).all(), float(det.min())
            assert (margin >= 0).all(), float(margin.min())
            torch.testing.assert_close(lad, det.log(), rtol=1e-4, atol=1e-4)
            back = t.inv(y.clone())  # a fresh tensor: the inverse, not the cache
            torch.testing.assert_close(back, z, rtol=1e-4, atol=1e-4)
            total, z = total + lad, y
        assert torch.isfinite(total).all()
        assert (m.margins(x) >= 0).all()
        q = m.posterior(x)
        z = q.sample([draws])
        cached = q.log_prob(z)
        assert torch.isfinite(cached).all()
        if whole:
            torch.testing.assert_close(q.log_prob(z.clone()), cached, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("flow", FLOWS)
def test_log_density_is_the_change_of_variables(flow):
    torch.manual_seed(0)
    m = NFVAE(x_dim=64, latent_dim=3, hidden=(16,), flow=flow, flow_length=3)
    for p in m.flows.parameters():  # away from the initialisation
        torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(1, 64)
    base, h = m.base(x)
    z0 = base.sample()

    def push(v):
        for t in m.transforms(h):
            v = t(v)
        return v

    jac = torch.autograd.functional.jacobian(lambda v: push(v.unsqueeze(0))[0], z0[0])
    sign, logabs = torch.linalg.slogdet(jac)
    q = dist.TransformedDistribution(base, m.transforms(h))
    z = q.rsample()
    log_q = q.log_prob(z)  # scored from the cache
    torch.testing.assert_close(q.log_prob(z.clone()), log_q)  # and through the inverse
    assert torch.isfinite(log_q).all() and z.shape == (1, 3)
    zs, steps = [z0], m.transforms(h)
    for t in steps:
        zs.append(t(zs[-1]))
    by_hand = sum(signed_log_det(flow, t, v)[0].log() for t, v in zip(steps, zs))
    assert sign > 0
    expected = base.log_prob(z0) - logabs
    torch.testing.assert_close(base.log_prob(z0) - by_hand, expected, rtol=1e-4, atol=1e-4)
    q = dist.TransformedDistribution(base, steps)  # and Pyro's density at the same point
    torch.testing.assert_close(q.log_prob(zs[-1]), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flow", FLOWS)
def test_nf_flow_guides_stay_invertible_on_trained_weights(flow, digits):
    """Trained at a large step (lr 1e-2, 4 epochs on digits), then pushed where the raw
    hypernetwork outputs break the condition (w.u = -5 before Pyro's u_hat, so that
    1 + w.u tanh' < 0 near the hyperplane; beta' = -5): every determinant stays positive
    over 64 rows x 100 draws."""
    torch.manual_seed(0)
    m = NFVAE(digits.x_dim, latent_dim=4, hidden=(64,), flow=flow, flow_length=6)
    config = TrainConfig(epochs=4, lr=1e-2, batch_size=64, progress=False, device="cpu")
    result = fit(m.model, m.guide, digits, config)
    assert result.last["test_elbo"] > result.history[0]["test_elbo"]
    x = digits.x_test[:64]
    check_invertible(m, x, draws=100)
    with torch.no_grad():  # adversarial: the last layer's bias drives the raw outputs
        for f in m.flows:
            last = f.nn.layers[-1]
            last.weight.mul_(0.0)
            d = m.latent_dim
            if flow == "planar":  # (b, u, w): u = -5 w / |w|^2, so w.u = -5
                w = torch.ones(d)
                last.bias.copy_(torch.cat([torch.zeros(1), -5 * w / d, w]))
            else:  # (z0, alpha', beta')
                last.bias.copy_(torch.cat([torch.zeros(d), torch.ones(1), -5 * torch.ones(1)]))
    check_invertible(m, x, draws=100, whole=False)
