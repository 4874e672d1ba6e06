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


def rae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Ghosh et al. 2020, eq. 11: ||x - g(h)||^2 / 2s^2 + beta/2 ||h||^2 + lambda R (+ the
    Gaussians' constants), h = f(x); R = ||grad_z sum g(z)||^2 at h (gp) or ||theta||^2 / 2."""
    import math

    from ppl_vae.models.rae import RAE

    losses, formulas = [], []
    for penalty in ("gp", "l2"):
        torch.manual_seed(0)
        kw = dict(hidden=(8,), scale=0.5, code_weight=0.3, decoder_weight=0.2)
        m, x = RAE(x_dim=12, latent_dim=2, penalty=penalty, **kw), torch.rand(5, 12)
        losses.append(programs_loss(m, x))
        h = m.encoder(x)
        sq = ((x - m.decoder(h)) ** 2).sum(-1) / (2 * 0.5**2) + 6 * math.log(2 * math.pi * 0.25)
        code = 0.3 / 2 * (h**2).sum(-1) - math.log(0.3 / (2 * math.pi))
        if penalty == "gp":
            (grad,) = torch.autograd.grad(m.decoder(h).sum(), h, create_graph=True)
            reg = 0.2 * (grad**2).sum(-1)
        else:
            reg = 0.2 / 2 * sum((p**2).sum() for p in m.decoder.parameters()).expand(5)
        formulas.append((sq + code + reg).sum())
    return sum(losses), sum(formulas)  # both variants in one number


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


def svae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Davidson et al. 2018 in d = 4: log q(z|x) = log kappa - 2 log 2pi - log I_1(kappa)
    + kappa mu.z (torch's i1e), log p(z) = -log |S^3| = -log 2 pi^2."""
    from ppl_vae.models.svae import SVAE

    torch.manual_seed(0)
    m, x = SVAE(x_dim=12, latent_dim=4, hidden=(8,)), torch.rand(5, 12).bernoulli()
    loss = programs_loss(m, x)
    pyro.set_rng_seed(3)
    q = m.posterior(x)
    z, k = q.rsample(), q.concentration
    log_bessel = torch.special.i1e(k).log() + k
    log_q = (
        k.log() - 2 * torch.log(torch.tensor(2 * torch.pi)) - log_bessel + k * (q.loc * z).sum(-1)
    )
    log_p = -torch.log(torch.tensor(2 * torch.pi**2))
    formula = -(m.likelihood(z).log_prob(x) + log_p - log_q).sum()
    return loss, formula


def gamma_vae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Gamma prior and guide: log Gamma(z; a, b) = a log b + (a - 1) log z - b z - lgamma(a)."""
    from ppl_vae.models.gamma_vae import GammaVAE

    def log_gamma(z, a, b):
        return (a * b.log() + (a - 1) * z.log() - b * z - torch.lgamma(a)).sum(-1)

    torch.manual_seed(0)
    m = GammaVAE(x_dim=12, latent_dim=3, hidden=(8,), prior_shape=0.7, prior_rate=2.0)
    x = torch.rand(5, 12).bernoulli()
    loss = programs_loss(m, x)
    pyro.set_rng_seed(3)
    q = m.posterior(x)
    z, a, b = q.rsample(), q.base_dist.concentration, q.base_dist.rate
    log_p = log_gamma(z, torch.tensor(0.7), torch.tensor(2.0))
    formula = -(m.likelihood(z).log_prob(x) + log_p - log_gamma(z, a, b)).sum()
    return loss, formula


def ivae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Bepler et al. 2019: the VAE's loss with p(x|z) Bernoulli(g(R(phi) c + s tau, z_c)) per
    pixel, the coordinates turned by the rotation matrix written out."""
    from ppl_vae.models.ivae import IVAE

    torch.manual_seed(0)
    m, x = IVAE(x_dim=16, latent_dim=2, hidden=(8,), dx_prior=0.1), torch.rand(5, 16).bernoulli()
    loss = programs_loss(m, x)
    pyro.set_rng_seed(3)
    q = m.posterior(x)
    z = q.rsample()
    phi, tau, content = z[:, 0], z[:, 1:3], z[:, 3:]
    rot = torch.stack([phi.cos(), -phi.sin(), phi.sin(), phi.cos()], -1).reshape(5, 2, 2)
    v, u = torch.meshgrid(torch.linspace(-1, 1, 4), torch.linspace(-1, 1, 4), indexing="ij")
    grid = torch.stack([u.flatten(), v.flatten()], -1)  # (16, 2), row-major pixels
    coords = grid @ rot.transpose(1, 2) + 0.1 * tau[:, None, :]
    logits = m.decoder(coords, content)
    log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    formula = -(log_lik + m.prior().log_prob(z) - q.log_prob(z)).sum()
    return loss, formula


def vq_vae_case() -> tuple[torch.Tensor, torch.Tensor]:
    """van den Oord et al. 2017: -log p(x|z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2,
    each position's code the nearest codebook vector by brute force (beta = 0.25)."""
    from ppl_vae.models.vq_vae import VQVAE

    torch.manual_seed(0)
    m = VQVAE(x_dim=12, latent_dim=3, code_dim=2, codebook_size=4, hidden=(8,))
    x = torch.rand(5, 12).bernoulli()
    loss = programs_loss(m, x)
    z_e = m.encoder(x).reshape(5, 3, 2)
    k = ((z_e[:, :, None, :] - m.codebook) ** 2).sum(-1).argmin(-1)
    e = m.codebook[k]
    log_lik = m.likelihood(e.reshape(5, 6)).log_prob(x)
    formula = (-log_lik + 1.25 * ((z_e - e) ** 2).sum((-1, -2))).sum()
    return loss, formula


#: model name -> its case. One entry per model of the suite.
CASES: dict[str, Case] = {
    "vae": vae_case,
    "mog-vae": mog_vae_case,
    "cat-vae": cat_vae_case,
    "cat-vae[enum]": cat_vae_enum_case,  # --set estimator="enum"
    "joint-vae": joint_vae_case,
    "rae": rae_case,
    "aae": aae_case,
    "svae": svae_case,
    "gamma-vae": gamma_vae_case,
    "ivae": ivae_case,
    "vq-vae": vq_vae_case,
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_loss_is_its_formula(name):
    loss, formula = CASES[name]()
    assert torch.isfinite(loss) and loss.requires_grad
    torch.testing.assert_close(loss, formula, rtol=1e-5, atol=1e-4)
