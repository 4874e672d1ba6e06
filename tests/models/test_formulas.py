"""Every model of the suite against its paper's formula on a tiny problem, in one file.

Each case builds a small model, runs its Pyro programs through Pyro's own ``Trace_ELBO``
(one draw) with a fixed seed, and recomputes the same loss by hand from the formula in the
model's docstring with the same draws: a case returns ``(loss_from_programs,
loss_by_formula)``. Adding a model to ``models/`` is adding one entry to ``CASES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pytest
import torch

Case = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def programs_loss(obj, *args: torch.Tensor, seed: int = 3) -> torch.Tensor:
    """Pyro's single-draw ``Trace_ELBO`` loss of ``obj.model`` / ``obj.guide``."""
    pyro.set_rng_seed(seed)
    elbo = pyro.infer.Trace_ELBO(max_plate_nesting=1)
    return elbo.differentiable_loss(obj.model, obj.guide, *args)


def vae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Kingma & Welling 2014: -[log p(x|z) + log p(z) - log q(z|x)], z ~ q(z|x)."""
    from ppl_vae.models.vae import VAE

    torch.manual_seed(0)
    vae, x = VAE(x_dim=12, latent_dim=2, hidden=(8,)), torch.rand(5, 12).bernoulli()
    loss = programs_loss(vae, x)
    pyro.set_rng_seed(3)
    q = vae.posterior(x)
    z = q.rsample()
    formula = -(vae.likelihood(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)).sum()
    return loss, formula


def mog_vae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture prior: log p(z) = logsumexp_k [log pi_k + log N(z; m_k, s_k^2)]."""
    from ppl_vae.models.mog_vae import MoGVAE

    torch.manual_seed(0)
    m, x = MoGVAE(x_dim=12, latent_dim=2, hidden=(8,), components=3), torch.rand(5, 12).bernoulli()
    loss = programs_loss(m, x)
    pyro.set_rng_seed(3)
    q = m.posterior(x)
    z = q.rsample()
    scales = torch.nn.functional.softplus(m.raw_scales) + 1e-4
    comp = torch.distributions.Normal(m.means, scales).log_prob(z[:, None, :]).sum(-1)
    log_prior = (comp + m.logits.log_softmax(-1)).logsumexp(-1)
    formula = -(m.likelihood(z).log_prob(x) + log_prior - q.log_prob(z)).sum()
    return loss, formula


def cat_vae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Jang et al. 2017, relaxed: one straight-through draw scored as the categorical it
    is, -[log p(x|c) + D log(1/K) - sum_d log q(c_d|x)]."""
    from ppl_vae.models.cat_vae import CatVAE

    torch.manual_seed(0)
    x, (dim, k) = torch.rand(5, 12).bernoulli(), (2, 3)
    relaxed = CatVAE(x_dim=12, latent_dim=dim, categories=k, hidden=(8,), temperature=0.7)
    loss = programs_loss(relaxed, x)
    pyro.set_rng_seed(3)
    log_q = relaxed.encoder(x).unflatten(-1, (dim, k)).log_softmax(-1)
    c = relaxed.posterior(x).rsample()  # hard one-hot rows, (5, D, K)
    log_lik = relaxed.likelihood(c).log_prob(x)
    formula = -(log_lik + dim * math.log(1 / k) - (c * log_q).sum((-2, -1))).sum()
    return loss, formula


def cat_vae_enum_case() -> tuple[torch.Tensor, torch.Tensor]:
    """The same model, estimator="enum": the K**D joint states summed out,
    -sum_c q(c|x)[log p(x|c) + log p(c) - log q(c|x)]."""
    import itertools

    from ppl_vae.models.cat_vae import CatVAE

    torch.manual_seed(0)
    x, (dim, k) = torch.rand(5, 12).bernoulli(), (2, 3)
    enum = CatVAE(x_dim=12, latent_dim=dim, categories=k, hidden=(8,), estimator="enum")
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    enum_loss = elbo.differentiable_loss(enum.model, enum.guide, x)
    log_q = enum.encoder(x).unflatten(-1, (dim, k)).log_softmax(-1)
    total = torch.zeros(5)
    for digits in itertools.product(range(k), repeat=dim):
        code = torch.cat([torch.eye(k)[d] for d in digits]).expand(5, -1)
        log_q_c = sum(log_q[:, d, digit] for d, digit in enumerate(digits))
        log_joint = enum.lik.distribution(enum.decoder(code)).log_prob(x) - dim * math.log(k)
        total = total + log_q_c.exp() * (log_joint - log_q_c)
    return enum_loss, -total.sum()


def joint_vae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Dupont 2018 with c summed out (TraceEnum_ELBO, one z draw): -sum_n [sum_c q(c|x)
    (log p(x|z,c) + log(1/K) - log q(c|x)) + log p(z) - log q(z|x)]."""
    from ppl_vae.models.joint_vae import JointVAE

    torch.manual_seed(0)
    m, x = JointVAE(x_dim=12, latent_dim=2, categories=3, hidden=(8,)), torch.rand(5, 12)
    x = x.bernoulli()
    pyro.set_rng_seed(3)
    loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m.model, m.guide, x)
    pyro.set_rng_seed(3)
    hidden = m.encoder(x)
    loc, scale = hidden[:, :2], torch.nn.functional.softplus(hidden[:, 2:4]) + 1e-4
    log_q_c = hidden[:, 4:].log_softmax(-1)
    q_z = torch.distributions.Normal(loc, scale)
    z = q_z.rsample()
    per_c = torch.stack(
        [m.likelihood(z, torch.eye(3)[c].expand(5, 3)).log_prob(x) for c in range(3)], -1
    )
    inner = (log_q_c.exp() * (per_c + math.log(1 / 3) - log_q_c)).sum(-1)
    log_p_z = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    formula = -(inner + log_p_z - q_z.log_prob(z).sum(-1)).sum()
    return loss, formula


#: model name -> its case. One entry per model of the suite.
CASES: dict[str, Case] = {
    "vae": vae_case,
    "mog-vae": mog_vae_case,
    "cat-vae": cat_vae_case,
    "cat-vae[enum]": cat_vae_enum_case,  # --set estimator="enum"
    "joint-vae": joint_vae_case,
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_loss_is_its_formula(name):
    loss, formula = CASES[name]()
    assert torch.isfinite(loss) and loss.requires_grad
    torch.testing.assert_close(loss, formula, rtol=1e-5, atol=1e-4)
