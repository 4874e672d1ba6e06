"""Every objective against its paper's formula on a tiny problem, in one parametrised file.

Each bound is recomputed by hand from the same guide draws (the same seed): IWAE (Burda et
al. 2015), MIWAE and CIWAE (Rainforth et al. 2018). Their degenerate cases are other
objectives exactly; the CLI trains each and records its settings."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from ppl_vae.models.vae import VAE

from ppl_vae.cli import main
from ppl_vae.infer.ciwae import CIWAE_ELBO
from ppl_vae.infer.iwae import IWAE_ELBO
from ppl_vae.infer.miwae import MIWAE_ELBO


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
    ],
)
def test_objective_trains_from_the_cli(objective, flags, recorded, tmp_path):
    argv = ["train", "vae", "--latent-dim", "2", "--hidden", "32", "--epochs", "2"]
    argv += ["--no-progress", "--objective", objective, *flags, "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert cfg["objective"] == objective and cfg.items() >= recorded.items()
    assert math.isfinite(metrics["test_elbo"]) and metrics["jit"] == "traced"
    assert metrics["history"][-1]["train_objective"] < metrics["history"][0]["train_objective"]
