"""Discrete latents (models/cat_vae.py, models/joint_vae.py, models/blocks/discrete.py):
the straight-through draw is the hard categorical sample forward and the relaxed sample's
gradient backward; enumeration and the discrete evaluation agree with log p(x) summed over
every state by hand; both models train, evaluate and sample from the CLI and ``fit``."""

from __future__ import annotations

import itertools
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppl_vae.models.blocks.discrete import StraightThroughCategorical
from ppl_vae.models.cat_vae import CatVAE
from torch.distributions import kl_divergence

from ppl_vae import data
from ppl_vae.cli import main
from ppl_vae.infer import fit
from ppl_vae.infer.recommend import recommended_config
from ppl_vae.measure.importance import iw_log_likelihood
from ppl_vae.programs import from_object


@pytest.mark.parametrize("temperature", [0.3, 2.0])
def test_straight_through_is_hard_forward_relaxed_backward(temperature):
    logits = torch.randn(4, 5, requires_grad=True)
    tau, weights = torch.tensor(temperature), torch.randn(4, 5)
    pyro.set_rng_seed(1)
    hard = StraightThroughCategorical(tau, logits=logits).rsample()
    pyro.set_rng_seed(1)
    soft = dist.RelaxedOneHotCategorical(tau, logits=logits).rsample()
    assert torch.equal(hard, torch.nn.functional.one_hot(soft.argmax(-1), 5).float())
    (g_hard,) = torch.autograd.grad((weights * hard).sum(), logits)
    (g_soft,) = torch.autograd.grad((weights * soft).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)


@pytest.mark.parametrize("temperature", [0.3, 2.0])
def test_hard_draws_follow_the_categorical_and_kl_is_discrete(temperature):
    """Gumbel-max: the hard draws are Cat(softmax(logits)) at any temperature (4 standard
    errors on 40000 draws); the registered KL is sum p log(p K) against the uniform."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = StraightThroughCategorical(torch.tensor(temperature), probs=probs)
    freq = q.sample([40000]).mean(0)
    se = (probs * (1 - probs) / 40000).sqrt()
    assert ((freq - probs).abs() < 4 * se).all(), (freq, probs)
    uniform = dist.OneHotCategorical(logits=torch.zeros(4))
    expected = (probs * (probs * 4).log()).sum()
    torch.testing.assert_close(kl_divergence(q, uniform), expected)


@pytest.mark.parametrize("estimator", ["relaxed", "enum"])
def test_evaluation_is_the_discrete_log_likelihood(estimator):
    """log p(x) = logsumexp_c [log p(x|c) - D log K] over all K**D states, by hand; the
    IW estimate with K=4000 draws of the eval-mode guide (discrete for both) reaches it, and
    the enumerated ELBO is below it."""
    torch.manual_seed(0)
    dim, k = 2, 3
    m = CatVAE(x_dim=12, latent_dim=dim, categories=k, hidden=(8,), estimator=estimator).eval()
    x = torch.rand(6, 12).bernoulli()
    with torch.no_grad():
        codes = [
            torch.cat([torch.eye(k)[d] for d in s]) for s in itertools.product(range(k), repeat=dim)
        ]
        log_lik = torch.stack([m.lik.distribution(m.decoder(c)).log_prob(x) for c in codes])
        exact = (log_lik - dim * math.log(k)).logsumexp(0)
        pair = from_object(m, x)
        iw = iw_log_likelihood(pair, x, num_samples=4000)
    torch.testing.assert_close(iw, exact, atol=0.05, rtol=0)
    if estimator == "enum":  # the enumerated ELBO is exact in c: a bound, never above
        elbo = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, m.guide, x)
        assert elbo <= exact.sum() + 1e-4


CLI_CASES = {
    "cat-vae": ["--set", "latent_dim=4", "--set", "categories=3"],
    "cat-vae[enum]": ["--set", 'estimator="enum"', "--set", "latent_dim=2"],
    "joint-vae": ["--latent-dim", "2", "--set", "categories=4"],
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_trains_evaluates_and_samples_from_the_cli(case, tmp_path, capsys):
    out, name = tmp_path / "run", case.split("[")[0]
    train = ["train", name, "--data", "digits", "--epochs", "1", "--hidden", "32"]
    assert main([*train, *CLI_CASES[case], "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["elbo"] == ("meanfield" if case == "cat-vae" else "enum")
    assert main(["evaluate", str(out), "--iwae-samples", "10", "--no-progress"]) == 0
    record = json.loads((out / "evaluation.json").read_text())
    assert record["log_likelihood_of"] == "x"
    assert record["test_elbo"] - 0.05 <= record["test_log_likelihood"] < 0
    assert main(["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_enumerated_estimator_refuses_too_many_states(capsys):
    args = ["train", "cat-vae", "--data", "digits", "--set", 'estimator="enum"']
    assert main([*args, "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "latent_dim" in err[0]


def test_fit_from_python_takes_the_enumerated_recommendation():
    ds = data.load("digits")
    m = CatVAE(x_dim=64, latent_dim=2, categories=3, hidden=(16,), estimator="enum")
    config = recommended_config(m.model, m.guide, epochs=1, progress=False)
    assert config.elbo == "enum"
    result = fit(m.model, m.guide, ds, config)
    assert result.choice.elbo == "enum" and math.isfinite(result.history[-1]["test_elbo"])
