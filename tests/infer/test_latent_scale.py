"""beta-VAE: ``poutine.scale(beta)`` on the latent site of both programs gives
reconstruction + beta * KL; the rate--distortion trade-off; the two failure modes."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppl_vae.models.vae import VAE
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from ppl_vae import registry
from ppl_vae.cli import main
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.elbo import make_elbo
from ppl_vae.infer.latent_scale import LatentScaleMessenger
from ppl_vae.infer.objective import Objective
from ppl_vae.infer.trainer import fit, make_objective
from ppl_vae.measure import failure_modes
from ppl_vae.measure.metrics import evaluate
from ppl_vae.programs import Programs, from_object


def elbo_module(vae, kind="trace", num_particles=1):
    x = torch.rand(2, vae.x_dim)
    return Objective(from_object(vae, x), make_elbo(kind, num_particles))


@pytest.fixture
def vae_and_x(digits):
    vae = VAE(digits.x_dim, latent_dim=3, hidden=(32,))
    return vae, digits.x_train[:16]


def guide_draw(vae, x, seed):
    """The z the guide draws under ``seed`` (the same draw the ELBO sees)."""
    pyro.set_rng_seed(seed)
    return poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"].detach()


@torch.no_grad()
def terms(vae, x, z):
    """Summed log p(x|z) and analytic KL(q(z|x) || p(z)) over the batch."""
    q = vae.posterior(x).base_dist
    kl = kl_divergence(q, dist.Normal(torch.zeros_like(q.loc), 1.0)).sum()
    return vae.likelihood(z).log_prob(x).sum(), kl


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
def test_meanfield_loss_is_reconstruction_plus_beta_kl_exactly(vae_and_x, beta):
    vae, x = vae_and_x
    loss_fn = elbo_module(vae, "meanfield")
    pyro.set_rng_seed(7)
    loss = loss_fn(x, beta=beta)
    log_lik, kl = terms(vae, x, guide_draw(vae, x, 7))
    assert float(kl) > 1.0  # the KL term is not negligible, so beta matters
    assert float(loss.detach()) == pytest.approx(float(-log_lik + beta * kl), rel=1e-6, abs=1e-4)


def test_meanfield_beta_enters_linearly(vae_and_x):
    vae, x = vae_and_x
    loss_fn = elbo_module(vae, "meanfield")
    losses = {}
    for beta in (1.0, 4.0):
        pyro.set_rng_seed(3)  # the same z for both
        losses[beta] = float(loss_fn(x, beta=beta).detach())
    _, kl = terms(vae, x, guide_draw(vae, x, 3))
    assert losses[4.0] - losses[1.0] == pytest.approx(3.0 * float(kl), rel=1e-5)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_the_default_objective_is_the_closed_form_elbo(vae_and_x, beta, jit):
    """The objective ``fit`` builds from a default config (``--elbo auto``) is, for the VAE,
    reconstruction at the guide's draw + beta * the closed-form KL (written out here, not
    ``kl_divergence``): the same eps, the exact KL; beta scales the KL alone."""
    vae, x = vae_and_x
    pair = from_object(vae, x)
    loss_fn = make_objective(pair, TrainConfig(beta=beta, jit=jit))
    assert loss_fn.choice.elbo == "meanfield" and loss_fn.choice.kl == {"z": "analytic"}
    losses = {}
    for b in (1.0, beta):
        pyro.set_rng_seed(11)  # the same eps for every beta
        losses[b] = float(loss_fn(x, beta=b).detach())
    z = guide_draw(vae, x, 11)
    with torch.no_grad():
        q = vae.posterior(x).base_dist
        kl = 0.5 * (q.scale**2 + q.loc**2 - 1.0 - 2.0 * q.scale.log()).sum()
        log_lik = vae.likelihood(z).log_prob(x).sum()
    assert float(kl) > 1.0
    assert losses[beta] == pytest.approx(float(-log_lik + beta * kl), rel=1e-6, abs=1e-4)
    assert losses[beta] - losses[1.0] == pytest.approx((beta - 1) * float(kl), abs=1e-3)
    # The sampled estimator at the same draw differs by the KL's sampling noise, log q - log p.
    trace = make_objective(pair, TrainConfig(beta=beta, jit=jit, elbo="trace"))
    pyro.set_rng_seed(11)
    sampled = float(trace(x, beta=beta).detach())
    with torch.no_grad():
        log_ratio = vae.posterior(x).log_prob(z).sum() - vae.prior().log_prob(z).sum()
    assert sampled == pytest.approx(float(-log_lik + beta * log_ratio), rel=1e-6, abs=1e-4)
    assert abs(sampled - losses[beta]) > 0.1


def test_trace_elbo_is_reconstruction_plus_beta_kl_in_expectation(vae_and_x):
    vae, x = vae_and_x
    beta, particles, repeats = 4.0, 2000, 8
    loss_fn = elbo_module(vae, "trace", num_particles=particles)
    with torch.no_grad():
        estimates = torch.tensor([float(loss_fn(x, beta=beta)) for _ in range(repeats)])
        # reference: Monte Carlo distortion (many draws) + beta * analytic KL
        q = vae.posterior(x)
        z = q.sample([20000])  # (S, B, d)
        log_lik = vae.likelihood(z).log_prob(x).sum(-1)  # (S,)
        _, kl = terms(vae, x, z[0])
    se = math.sqrt(estimates.var() / repeats + log_lik.var() / log_lik.numel())
    expected = float(-log_lik.mean() + beta * kl)
    assert abs(float(estimates.mean()) - expected) < 4 * se
    # the tolerance is tight enough to tell beta = 4 from beta = 1 (or from beta = 3.5)
    assert 4 * se < 0.5 * float(kl)


def test_scaling_only_one_program_is_wrong(vae_and_x):
    """Scale the model's latent site alone: TraceMeanField_ELBO (which weights its
    analytic KL by the guide's scale) silently trains beta = 1, and Trace_ELBO trains
    -log p(x|z) - beta log p(z) + log q(z), which is neither. Both sides scaled, both
    estimators agree on reconstruction + beta * KL."""
    vae, x = vae_and_x
    beta = 4.0

    model = LatentScaleMessenger(beta, ["z"])(vae.model)
    guide = vae.guide

    meanfield = TraceMeanField_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(5)
    one_sided = float(meanfield.differentiable_loss(model, guide, x).detach())
    log_lik, kl = terms(vae, x, guide_draw(vae, x, 5))
    assert one_sided == pytest.approx(float(-log_lik + 1.0 * kl), rel=1e-6)  # beta lost
    assert abs(one_sided - float(-log_lik + beta * kl)) > 1.0

    trace = Trace_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(5)
    one_sided = float(trace.differentiable_loss(model, guide, x).detach())
    loss_fn = elbo_module(vae)
    pyro.set_rng_seed(5)
    both = float(loss_fn(x, beta=beta).detach())
    z = guide_draw(vae, x, 5)
    log_q = vae.posterior(x).log_prob(z).sum().detach()
    # the one-sided loss differs from the beta-VAE one by -(beta - 1) log q(z)
    assert one_sided - both == pytest.approx(-(beta - 1) * float(log_q), rel=1e-4)
    assert abs((beta - 1) * float(log_q)) > 1.0


# -- the rate--distortion trade-off (the bar) -----------------------------------------


@pytest.fixture(scope="module")
def trained(digits):
    """The same seed and budget at beta = 0.5, 1 and 8 (latent_dim 8)."""
    runs = {}
    for beta in (0.5, 1.0, 8.0):
        pyro.set_rng_seed(0)
        vae = VAE(digits.x_dim, latent_dim=8)
        config = TrainConfig(epochs=8, beta=beta, seed=0, progress=False, device="cpu")
        runs[beta] = fit(vae.model, vae.guide, digits, config)
    return runs


def test_higher_beta_trades_rate_for_distortion(trained):
    low, high = trained[0.5].last, trained[8.0].last
    assert high["rate"] < low["rate"] - 0.5
    assert high["distortion"] > low["distortion"] + 0.5
    assert high["active_units"] <= low["active_units"]
    # evaluation is at beta = 1: the ELBO identity holds for both
    for h in (low, high):
        assert h["test_elbo"] == pytest.approx(-(h["rate"] + h["distortion"]), rel=1e-6)


# -- failure modes --------------------------------------------------------------------


def test_a_normal_run_raises_no_warning(trained, digits):
    result = trained[1.0]
    metrics = evaluate(result.pair, digits.x_test)
    assert metrics["active_units"] >= 2 and metrics["rate"] > 1.0
    assert failure_modes.marginal_kl_per_dim(result.pair, digits.x_test) < 0.1
    assert failure_modes.diagnose(metrics, result.pair, digits.x_test) == []


def test_a_high_beta_run_is_diagnosed_as_collapsed(trained, digits):
    result = trained[8.0]
    metrics = evaluate(result.pair, digits.x_test)
    (warning,) = failure_modes.diagnose(metrics, result.pair, digits.x_test)
    assert warning.startswith("posterior collapse")


def test_constructed_collapse_triggers_the_warning(digits):
    vae = VAE(digits.x_dim, latent_dim=4, hidden=(16,))
    last = vae.encoder.body[-1]
    with torch.no_grad():  # q(z|x) = N(0, I) for every x: softplus(0.5413) = 1
        last.weight.zero_()
        last.bias[:4] = 0.0
        last.bias[4:] = math.log(math.e - 1) - vae.encoder.min_scale
    pair = from_object(vae, digits.x_test)
    metrics = evaluate(pair, digits.x_test)
    assert metrics["active_units"] == 0 and metrics["rate"] < 1e-3
    (warning,) = failure_modes.diagnose(metrics, pair, digits.x_test)
    assert "the latent code is ignored" in warning and "lower beta" in warning


def test_constructed_no_compression_triggers_the_warning(digits):
    vae = VAE(digits.x_dim, latent_dim=4, hidden=(16,))
    last = vae.encoder.body[-1]
    with torch.no_grad():  # spread the means far beyond N(0, I), shrink the scales
        last.weight[:4] *= 50.0
        last.weight[4:] = 0.0
        last.bias[4:] = -8.0
    pair = from_object(vae, digits.x_test)
    metrics = evaluate(pair, digits.x_test)
    assert failure_modes.marginal_kl_per_dim(pair, digits.x_test) > 1.0
    (warning,) = failure_modes.diagnose(metrics, pair, digits.x_test)
    assert warning.startswith("no compression") and "raise beta" in warning
    # without the model, the coarser per-dimension rate proxy
    assert failure_modes.diagnose({"rate": 40.0, "active_units": 4, "kl_per_dim": [10.0] * 4})
    assert not failure_modes.diagnose({"rate": 8.0, "active_units": 4, "kl_per_dim": [2.0] * 4})
    assert failure_modes.diagnose({"rate": None, "active_units": None}) == []


def test_train_cli_records_and_prints_the_warning(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "vae", "--beta", "16", "--epochs", "2", "--latent-dim", "4"]
    assert main([*argv, "--hidden", "32", "--no-progress", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: posterior collapse" in err
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("posterior collapse")


def test_point_mass_guides_get_no_warning(digits):
    """A deterministic autoencoder's "rate" is a log prior density, not a KL."""
    model, guide = registry.build("sparse-ae", x_dim=digits.x_dim)
    pair = Programs(model, guide, digits.x_test[:2])
    metrics = evaluate(pair, digits.x_test)
    assert metrics["active_units"] is not None  # it keeps a prior, so the metrics exist
    assert pair.point_mass
    assert failure_modes.diagnose(metrics, pair, digits.x_test) == []


def sequence_programs(kl_scale: float = 1.0):
    """A sequence program whose latent sites ``z_1..z_T`` vary with the batch (``T`` is the
    batch's longest length, as in Pyro's DMM); ``kl_scale`` is the oracle's own
    ``poutine.scale`` on every ``z_t`` in both programs."""
    weight = torch.nn.Parameter(torch.tensor(0.7))

    def model(x, lengths):
        pyro.module("seq", torch.nn.ParameterList([weight]))
        z = x.new_zeros(x.shape[0])
        with pyro.plate("data", x.shape[0]):
            for t in range(1, int(lengths.max()) + 1):
                mask = lengths >= t
                with poutine.mask(mask=mask), poutine.scale(scale=kl_scale):
                    z = pyro.sample(f"z_{t}", dist.Normal(0.5 * z, 1.0))
                with poutine.mask(mask=mask):
                    pyro.sample(f"x_{t}", dist.Normal(weight * z, 0.5), obs=x[:, t - 1])

    def guide(x, lengths):
        with pyro.plate("data", x.shape[0]):
            for t in range(1, int(lengths.max()) + 1):
                with poutine.mask(mask=lengths >= t), poutine.scale(scale=kl_scale):
                    pyro.sample(f"z_{t}", dist.Normal(0.5 * x[:, t - 1], 0.8))

    return model, guide


def test_beta_scales_the_latent_sites_of_each_trace_not_only_the_first():
    """The first trace has z_1, z_2; a later batch reaches z_4: beta=2 doubles every z_t's
    KL term there too (the oracle: Pyro's Trace_ELBO on programs that scale each z_t by 2
    themselves), while the observed sites stay unscaled."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    short, long = torch.tensor([2, 1] * 4), torch.tensor([4, 2, 3, 1] * 2)
    model, guide = sequence_programs()
    pair = Programs(model, guide, (x, short))
    assert pair.all_latent_sites == ("z_1", "z_2")
    objective = make_objective(pair, TrainConfig(elbo="trace", jit=False), 8)
    oracle_model, oracle_guide = sequence_programs(kl_scale=2.0)
    for seed in range(3):
        with pair.scope():
            pyro.set_rng_seed(seed)
            ours = objective(x, long, beta=2.0)
        pyro.set_rng_seed(seed)
        theirs = Trace_ELBO().differentiable_loss(oracle_model, oracle_guide, x, long)
        pyro.set_rng_seed(seed)
        unscaled = Trace_ELBO().differentiable_loss(model, guide, x, long)
        assert torch.allclose(ours, theirs), (float(ours), float(theirs))
        assert not torch.allclose(ours, unscaled)
