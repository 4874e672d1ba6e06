"""Every objective against its paper's formula on a tiny problem, in one parametrised file.

Each objective is recomputed by hand from the same guide (and prior) draws, the same seed:
IWAE (Burda et al. 2015), MIWAE and CIWAE (Rainforth et al. 2018), WAE-MMD (Tolstikhin et
al. 2018) and InfoVAE-MMD (Zhao et al. 2019), whose MMD estimator is checked against the
U-statistic written out and against its expectation. Degenerate cases are other objectives
exactly; the CLI trains each and records its settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from ppl_vae.models.vae import VAE

from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer import fit
from ppl_vae.infer.aae import AdversarialELBO
from ppl_vae.infer.ciwae import CIWAE_ELBO
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.dip import from_config as dip_from_config
from ppl_vae.infer.elbo import Trace_ELBO
from ppl_vae.infer.factorvae import FactorELBO, permute_dims
from ppl_vae.infer.iwae import IWAE_ELBO
from ppl_vae.infer.miwae import MIWAE_ELBO
from ppl_vae.infer.mmd import KERNELS, MMDELBO, infovae_from_config, kernel, mmd, wae_from_config
from ppl_vae.runs import checkpoint


@pytest.fixture
def vae_and_x():
    torch.manual_seed(0)
    return VAE(x_dim=64, latent_dim=2, hidden=(32,)), torch.rand(6, 64).bernoulli()


def lse(w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """:math:`\\log \\frac1K \\sum_k e^{w_k}` over ``dim``."""
    return w.logsumexp(dim) - math.log(w.shape[dim])


#: name -> (the objective, draws per example, its per-example bound from log-weights (S, B))
BOUNDS = {
    "iwae K=7": (lambda: IWAE_ELBO(num_particles=7), 7, lse),
    "miwae M=3 K=4": (
        lambda: MIWAE_ELBO(num_particles=4, groups=3),
        12,
        lambda w: lse(w.reshape(3, 4, -1), 1).mean(0),
    ),
    "ciwae beta=0.3 K=6": (
        lambda: CIWAE_ELBO(num_particles=6, beta=0.3),
        6,
        lambda w: 0.3 * w.mean(0) + 0.7 * lse(w),
    ),
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_bound_matches_its_formula(name, vae_and_x):
    make, draws, formula = BOUNDS[name]
    vae, x = vae_and_x
    pyro.set_rng_seed(3)
    loss = make().differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)  # the same draws, by hand: z ~ q(z|x), w = log p(x,z) - log q(z|x)
    q = vae.posterior(x)
    z = q.rsample([draws])
    w = vae.likelihood(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(loss, -formula(w).sum())
    assert loss.requires_grad and isinstance(make().loss(vae.model, vae.guide, x), torch.Tensor)


def mean_elbo(k: int):
    """Pyro's own ELBO averaged over ``k`` vectorised draws."""
    return pyro.infer.Trace_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1)


#: (a, b): objectives whose losses are equal on the same draws.
DEGENERATE = {
    "iwae K=1 = elbo": (lambda: IWAE_ELBO(1), lambda: mean_elbo(1)),
    "miwae M=1 = iwae": (lambda: MIWAE_ELBO(num_particles=5, groups=1), lambda: IWAE_ELBO(5)),
    "miwae K=1 = elbo of M": (lambda: MIWAE_ELBO(num_particles=1, groups=4), lambda: mean_elbo(4)),
    "ciwae beta=0 = iwae": (lambda: CIWAE_ELBO(5, beta=0.0), lambda: IWAE_ELBO(5)),
    "ciwae beta=1 = elbo of K": (lambda: CIWAE_ELBO(4, beta=1.0), lambda: mean_elbo(4)),
    "mmd weights 1, 0 = elbo": (lambda: MMDELBO(1.0, 0.0), Trace_ELBO),
    "infovae alpha=0 lambda=1 = elbo": (
        lambda: infovae_from_config(TrainConfig(objective="infovae", mmd_lambda=1.0)),
        lambda: mean_elbo(1),
    ),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_cases_are_the_other_objectives(name, vae_and_x):
    vae, x = vae_and_x
    losses = []
    for make in DEGENERATE[name]:
        pyro.set_rng_seed(5)
        losses.append(make().differentiable_loss(vae.model, vae.guide, x))
    torch.testing.assert_close(*losses)


def test_ciwae_lies_between_the_elbo_and_iwae_on_every_draw(vae_and_x):
    """Jensen on each set of draws: mean_k w <= logmeanexp_k w, so CIWAE is between them."""
    vae, x = vae_and_x
    vae.decoder[-1].weight.data.mul_(10)  # a poor proposal: the three are far apart
    values = []
    for beta in (1.0, 0.5, 0.0):
        pyro.set_rng_seed(7)
        values.append(-float(CIWAE_ELBO(8, beta=beta).loss(vae.model, vae.guide, x)))
    assert values[0] + 1 < values[1] < values[2] - 1, values


@pytest.mark.parametrize(
    "objective,flags,recorded",
    [
        ("miwae", ["--num-particles", "2", "--miwae-groups", "3"], {"miwae_groups": 3}),
        ("ciwae", ["--num-particles", "3", "--ciwae-beta", "0.25"], {"ciwae_beta": 0.25}),
        ("wae", ["--mmd-kernel", "rbf", "--mmd-lambda", "5"], {"mmd_kernel": "rbf"}),
        ("infovae", ["--info-alpha", "0.5", "--mmd-lambda", "5"], {"info_alpha": 0.5}),
        ("dip", ["--dip-type", "ii", "--dip-lambda-od", "2"], {"dip_type": "ii"}),
        (
            "factorvae",
            ["--factor-gamma", "3", "--discriminator-hidden", "32,32", "--batch-size", "128"],
            {"factor_gamma": 3},
        ),
    ],
)
def test_objective_trains_from_the_cli(objective, flags, recorded, tmp_path):
    argv = ["train", "vae", "--latent-dim", "2", "--hidden", "32", "--epochs", "2"]
    argv += ["--no-progress", "--objective", objective, *flags, "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert cfg["objective"] == objective and cfg.items() >= recorded.items()
    assert math.isfinite(metrics["test_elbo"])
    assert metrics["jit"] == "traced" or objective == "factorvae"  # its settings: each step
    assert all(math.isfinite(h.get("tc_estimate", 0.0)) for h in metrics["history"])
    assert metrics["history"][-1]["train_objective"] < metrics["history"][0]["train_objective"]


# -- the MMD objectives over the aggregate posterior (WAE, InfoVAE) ----------------------
def kernel_by_hand(a: torch.Tensor, b: torch.Tensor, kind: str) -> float:
    """pythae's kernels written out for one pair: C = 2 d (the prior's variance is 1)."""
    c, d2 = 2.0 * a.numel(), float(((a - b) ** 2).sum())
    if kind == "rbf":
        return math.exp(-d2 / c)
    return sum(s * c / (s * c + d2) for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))


@pytest.mark.parametrize("kind", KERNELS)
def test_mmd_is_the_u_statistic_by_hand(kind):
    """Gretton et al. 2012, eq. 3 (Tolstikhin et al., Algorithm 1), with loops."""
    torch.manual_seed(1)
    z, w = torch.randn(5, 3), torch.randn(4, 3) + 0.5
    n, m = len(z), len(w)
    zz = sum(kernel_by_hand(z[i], z[j], kind) for i in range(n) for j in range(n) if i != j)
    ww = sum(kernel_by_hand(w[i], w[j], kind) for i in range(m) for j in range(m) if i != j)
    zw = sum(kernel_by_hand(z[i], w[j], kind) for i in range(n) for j in range(m))
    expected = zz / (n * (n - 1)) + ww / (m * (m - 1)) - 2 * zw / (n * m)
    assert float(mmd(z, w, kind)) == pytest.approx(expected, rel=1e-5)
    assert float(mmd(z[:1], w, kind)) == 0.0  # one code: no estimate


@pytest.mark.parametrize("kind", KERNELS)
def test_mmd_is_zero_in_expectation_for_identical_distributions(kind):
    """Unbiased: over 400 batches of 8 codes from the prior itself the mean is 0 within
    three standard errors, where the biased V-statistic (diagonals kept) is clearly above;
    codes shifted by 1 are far above."""
    torch.manual_seed(2)
    same, biased, shifted = [], [], []
    for _ in range(400):
        z, w = torch.randn(8, 4), torch.randn(8, 4)
        same.append(float(mmd(z, w, kind)))
        v = kernel(z, z, kind).mean() + kernel(w, w, kind).mean() - 2 * kernel(z, w, kind).mean()
        biased.append(float(v))
        shifted.append(float(mmd(z + 1.0, w, kind)))
    same, biased, shifted = map(torch.tensor, (same, biased, shifted))
    stderr = float(same.std()) / math.sqrt(len(same))
    assert abs(float(same.mean())) < 3 * stderr, (float(same.mean()), stderr)
    assert float(biased.mean()) > 10 * stderr
    assert float(shifted.mean()) > 10 * stderr


#: name -> (TrainConfig settings, KL weight, per-example MMD weight, kernel)
PENALISED = {
    "wae imq lambda=50": (dict(objective="wae", mmd_lambda=50.0), 0.0, 50.0, "imq"),
    "wae rbf lambda=50": (
        dict(objective="wae", mmd_lambda=50.0, mmd_kernel="rbf"),
        0.0,
        50.0,
        "rbf",
    ),
    "infovae alpha=0.3 lambda=20": (
        dict(objective="infovae", info_alpha=0.3, mmd_lambda=20.0),
        0.7,
        19.3,
        "imq",
    ),
}


@pytest.mark.parametrize("name", list(PENALISED))
def test_mmd_objective_matches_its_formula(name, vae_and_x):
    """-sum_i log p(x_i|z_i) + w_KL sum_i KL_i + n w_MMD MMD(z, z~), z~ ~ p(z), by hand."""
    settings, kl_weight, mmd_weight, kind = PENALISED[name]
    vae, x = vae_and_x
    config = TrainConfig(**settings).validate()
    make = {"wae": wae_from_config, "infovae": infovae_from_config}[config.objective]
    pyro.set_rng_seed(3)
    loss = make(config).differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)  # the guide's draw, then the prior's (drawn by the loss)
    q = vae.posterior(x)
    z = q.rsample()
    prior_draws = vae.prior().rsample([len(x)])
    kl = q.log_prob(z) - vae.prior().log_prob(z)
    expected = -vae.likelihood(z).log_prob(x).sum() + kl_weight * kl.sum()
    expected = expected + len(x) * mmd_weight * mmd(z, prior_draws, kind)
    torch.testing.assert_close(loss, expected)
    assert loss.requires_grad


# -- DIP-VAE (Kumar et al. 2018): the covariance of the aggregate posterior --------------
def dl_covariance_z_mean(z_mean: np.ndarray) -> np.ndarray:
    """disentanglement_lib's ``compute_covariance_z_mean`` (methods/unsupervised/vae.py),
    written out in NumPy: E[mu mu^T] - E[mu] E[mu]^T."""
    e_mm = np.mean(z_mean[:, :, None] * z_mean[:, None, :], axis=0)
    e_m = np.mean(z_mean, axis=0)
    return e_mm - e_m[:, None] * e_m[None, :]


def dl_regularize_diag_off_diag_dip(cov: np.ndarray, lambda_od: float, lambda_d: float):
    """disentanglement_lib's ``regularize_diag_off_diag_dip``, in NumPy."""
    diag = np.diag(cov)
    off = cov - np.diag(diag)
    return lambda_od * np.sum(off**2) + lambda_d * np.sum((diag - 1) ** 2)


def two_site_pair(x_dim: int = 64):
    """A hand-written Pyro pair (not the suite's VAE): two Normal latent sites, one a
    ``.to_event(1)`` vector, one a scalar per example, and its encoder."""
    enc = torch.nn.Linear(x_dim, 6)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            b = pyro.sample("b", dist.Normal(0.0, 1.0))
            logits = torch.cat([a, b.unsqueeze(-1)], -1).sum(-1, keepdim=True).expand(x.shape)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        h = enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(h[:, :2], h[:, 2:4].exp()).to_event(1))
            pyro.sample("b", dist.Normal(h[:, 4], h[:, 5].exp()))

    def mean_and_scale(x):
        h = enc(x)
        return torch.cat([h[:, :2], h[:, 4:5]], -1), torch.cat([h[:, 2:4], h[:, 5:6]], -1).exp()

    return model, guide, mean_and_scale


#: name -> (TrainConfig settings, lambda_od, lambda_d)
DIP_CASES = {
    "i defaults": (dict(objective="dip"), 10.0, 100.0),
    "ii defaults": (dict(objective="dip", dip_type="ii"), 10.0, 10.0),
    "ii lambda_od=3 lambda_d=7": (
        dict(objective="dip", dip_type="ii", dip_lambda_od=3.0, dip_lambda_d=7.0),
        3.0,
        7.0,
    ),
}


@pytest.mark.parametrize("program", ["vae", "hand-written two sites"])
@pytest.mark.parametrize("name", list(DIP_CASES))
def test_dip_objective_matches_disentanglement_lib(name, program, vae_and_x):
    """-ELBO (the same draw) + n R(C), R and C as disentanglement_lib computes them; C's
    estimate also against NumPy's own (biased) covariance."""
    settings, lambda_od, lambda_d = DIP_CASES[name]
    vae, x = vae_and_x
    if program == "vae":
        model, guide = vae.model, vae.guide

        def mean_and_scale(x):
            q = vae.posterior(x).base_dist
            return q.loc, q.scale
    else:
        model, guide, mean_and_scale = two_site_pair()
    config = TrainConfig(**settings).validate()
    pyro.set_rng_seed(3)
    loss = dip_from_config(config).differentiable_loss(model, guide, x)
    pyro.set_rng_seed(3)
    elbo = Trace_ELBO().differentiable_loss(model, guide, x)
    mu, sigma = (t.detach().double().numpy() for t in mean_and_scale(x))
    cov = dl_covariance_z_mean(mu)
    np.testing.assert_allclose(cov, np.cov(mu.T, bias=True), atol=1e-12)
    if config.dip_type == "ii":  # E[diag sigma^2] + Cov[mu]
        cov = np.mean(np.stack([np.diag(s**2) for s in sigma]), axis=0) + cov
    expected = float(elbo.detach()) + len(x) * dl_regularize_diag_off_diag_dip(
        cov, lambda_od, lambda_d
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert loss.requires_grad


def test_dip_refuses_a_guide_that_is_not_normal(vae_and_x):
    _, x = vae_and_x

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Laplace(torch.zeros(2), 1.0).to_event(1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Laplace(torch.zeros(2), 1.0).to_event(1))

    elbo = dip_from_config(TrainConfig(objective="dip").validate())
    with pytest.raises(UserError, match="site 'z' is Laplace"):
        elbo.differentiable_loss(model, guide, x)


# -- FactorVAE (Kim & Mnih 2018): a discriminator's density-ratio estimate of TC ----------
def test_factorvae_tc_term_matches_its_formula(vae_and_x):
    """loss = -ELBO (the same draw) + gamma sum_i log D(z_i) / (1 - D(z_i)) on a fixed
    discriminator; its gradient reaches the encoder, never the discriminator."""
    vae, x = vae_and_x
    elbo = FactorELBO(gamma=2.5, hidden=(16, 16), seed=4)
    pyro.set_rng_seed(3)
    loss = elbo.differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    plain = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    z = vae.posterior(x).rsample()
    d = torch.sigmoid(elbo.net(z).squeeze(-1)).double()  # D(z), a probability
    expected = float(plain.detach()) + 2.5 * float(torch.log(d / (1 - d)).sum().detach())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in elbo.net.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in vae.encoder.parameters())


def test_factorvae_discriminator_estimates_a_known_total_correlation():
    """Codes from a Gaussian with correlation rho have TC = -log(1 - rho^2) / 2 (0.83 nats
    at 0.9, 0 at 0): the objective's own discriminator steps (at_step on the codes a
    training step keeps) learn it from the batch's permutations alone."""
    torch.manual_seed(0)
    estimates = {}
    for rho in (0.9, 0.0):
        elbo = FactorELBO(gamma=1.0, hidden=(32,), seed=1)
        elbo.build(2, torch.device("cpu"))
        for group in elbo.optimizer.param_groups:
            group["lr"] = 3e-3  # the paper's 1e-4 needs far more steps than a unit test
        cov = torch.tensor([[1.0, rho], [rho, 1.0]])
        codes = torch.distributions.MultivariateNormal(torch.zeros(2), cov)
        for step in range(300):
            elbo.pending = (codes.sample([512]),)
            elbo.at_step(step, 1.0)
        with torch.no_grad():
            estimates[rho] = float(elbo.tc_logits(codes.sample([20000])).mean())
    assert estimates[0.9] == pytest.approx(-0.5 * math.log(1 - 0.81), abs=0.15), estimates
    assert abs(estimates[0.0]) < 0.1, estimates


def test_aae_discriminator_reaches_log_2_only_where_the_codes_match_the_prior():
    """The adversarial autoencoder's game at its optimum (q(z) = p(z)): the discriminator's
    loss stays at log 2; codes shifted off the prior are told apart (loss well below)."""
    torch.manual_seed(0)
    losses = {}
    for shift in (0.0, 2.0):
        elbo = AdversarialELBO(weight=1.0, hidden=(32,), seed=1)
        elbo.build(2, torch.device("cpu"))
        elbo.optimizer.param_groups[0]["lr"] = 3e-3
        for step in range(150):
            elbo.pending = (torch.randn(256, 2) + shift, torch.randn(256, 2))
            elbo.at_step(step, 1.0)
        with torch.no_grad():
            losses[shift] = float(
                elbo.discriminator_loss(torch.randn(5000, 2) + shift, torch.randn(5000, 2))
            )
    assert losses[0.0] == pytest.approx(math.log(2), abs=0.01), losses
    assert losses[2.0] < 0.4, losses


def test_permute_dims_keeps_each_column_and_breaks_their_dependence():
    torch.manual_seed(0)
    a = torch.randn(4000)
    z = torch.stack([a, a + 0.1 * torch.randn(4000)], -1)
    p = permute_dims(z)
    assert torch.equal(p.sort(0).values, z.sort(0).values)
    assert abs(float(torch.corrcoef(p.T)[0, 1])) < 0.05 < 0.9 < float(torch.corrcoef(z.T)[0, 1])


class DirCheckpointer:
    """:func:`fit`'s checkpoints in a folder, through the run layer's safetensors + JSON."""

    def __init__(self, path, resume: bool = False):
        self.path, self.resume = path, resume

    def restore(self, map_location):
        return checkpoint.load(self.path, map_location) if self.resume else None

    def save(self, record):
        checkpoint.save(self.path, record)


def test_factorvae_resumes_with_its_discriminator(tmp_path):
    """2 epochs and a resume to 3 give the weights, discriminator and history (its TC
    estimate included) of 3 straight: the discriminator and its Adam are in the checkpoint."""
    rng = torch.Generator().manual_seed(0)
    data = {
        k: torch.rand(n, 16, generator=rng).bernoulli()
        for k, n in [("x_train", 96), ("x_test", 32)]
    }
    config = TrainConfig(
        objective="factorvae", discriminator_hidden=[8], batch_size=32, progress=False, jit=False
    )
    runs = {}
    for name, plan in {"straight": [3], "resumed": [2, 3]}.items():
        for i, epochs in enumerate(plan):
            torch.manual_seed(0)
            vae = VAE(x_dim=16, latent_dim=2, hidden=(8,))
            saver = DirCheckpointer(tmp_path / name, resume=i > 0)
            result = fit(vae.model, vae.guide, data, config.replace(epochs=epochs), saver)
        runs[name] = (result, vae)
    (a, vae_a), (b, vae_b) = runs["straight"], runs["resumed"]
    assert a.history == b.history and "tc_estimate" in a.history[-1]
    for k, v in vae_a.state_dict().items():
        assert torch.equal(v, vae_b.state_dict()[k]), k
    for k, v in a.elbo.net.state_dict().items():
        assert torch.equal(v, b.elbo.net.state_dict()[k]), k
    # a checkpoint without the discriminator is refused, never continued with a fresh one

    class Stripped(DirCheckpointer):
        def restore(self, map_location):
            record = super().restore(map_location)
            return {k: v for k, v in record.items() if k != "objective"}

    vae = VAE(x_dim=16, latent_dim=2, hidden=(8,))
    with pytest.raises(UserError, match="discriminator.*train the run again"):
        fit(
            vae.model,
            vae.guide,
            data,
            config.replace(epochs=4),
            Stripped(tmp_path / "resumed", True),
        )
