"""Every model of the suite against its paper's formula on a tiny problem, in one file.

Each case builds a small model, runs its Pyro programs through Pyro's own ``Trace_ELBO``
(one draw) with a fixed seed, and recomputes the same loss by hand from the formula in the
model's docstring with the same draws: a case returns ``(loss_from_programs,
loss_by_formula)``. Adding a model to ``models/`` is adding one entry to ``CASES``.
"""

from __future__ import annotations

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


def aae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Makhzani et al. 2015, its default objective: -log p(x|z) - lambda log D(z), z ~ q(z|x)
    (no KL term), on a fixed discriminator D."""
    from ppl_vae.models.aae import AAE

    from ppl_vae.infer.aae import AdversarialELBO

    torch.manual_seed(0)
    m, x = AAE(x_dim=12, latent_dim=2, hidden=(8,)), torch.rand(5, 12).bernoulli()
    elbo = AdversarialELBO(weight=0.7, hidden=(6,), seed=2)
    pyro.set_rng_seed(3)
    loss = elbo.differentiable_loss(m.model, m.guide, x)
    pyro.set_rng_seed(3)
    z = m.posterior(x).rsample()
    d = torch.sigmoid(elbo.net(z).squeeze(-1))
    formula = -(m.likelihood(z).log_prob(x) + 0.7 * torch.log(d)).sum()
    return loss, formula


#: model name -> its case. One entry per model of the suite.
CASES: dict[str, Case] = {
    "vae": vae_case,
    "mog-vae": mog_vae_case,
    "aae": aae_case,
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_loss_is_its_formula(name):
    loss, formula = CASES[name]()
    assert torch.isfinite(loss) and loss.requires_grad
    torch.testing.assert_close(loss, formula, rtol=1e-5, atol=1e-4)
