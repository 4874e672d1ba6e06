"""The capacity-controlled objective gamma * |KL - C| (Burgess et al. 2018): its value
from Pyro's traces, its C schedule, and training that steers the rate to C."""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import pair_of
from ppl_vae.models.vae import VAE
from pyro import poutine

from ppl_vae.cli import common, parser
from ppl_vae.errors import UserError
from ppl_vae.infer import capacity
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.objective import Objective
from ppl_vae.infer.trainer import fit


def capacity_module(vae, gamma):
    """``loss(x, c)``: the capacity objective of the VAE's programs with C = c."""
    pair = pair_of(vae)
    objective = Objective(pair, capacity.CapacityELBO(gamma=gamma))
    objective.elbo.analytic_sites = pair.analytic_kl_sites  # as the trainer sets it

    def loss(x, c):
        objective.elbo.capacity = c
        return objective(x)

    return loss


def test_capacity_schedule_values():
    c = functools.partial(capacity.capacity, capacity_max=20.0, capacity_steps=400)
    assert [c(t) for t in (0, 100, 200, 400, 10_000)] == [0.0, 5.0, 10.0, 20.0, 20.0]
    values = [c(t) for t in range(401)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert capacity.capacity(0, capacity_max=3.0, capacity_steps=0) == 3.0


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("capacity_max", -1.0, "--capacity-max"),
        ("capacity_steps", -10, "--capacity-steps"),
        ("gamma", 0.0, "--gamma"),
    ],
)
def test_capacity_settings_are_checked_once_with_the_config(field, value, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(objective="capacity", **{field: value}).validate()


class StudentTPriorVAE(VAE):
    """A prior with no closed-form KL from the guide's Normal: the one-draw estimate."""

    def prior(self):
        return dist.StudentT(3.0, torch.zeros(self.latent_dim), 1.0).to_event(1)


@pytest.mark.parametrize("closed_form", [True, False], ids=["normal prior", "student-t prior"])
@pytest.mark.parametrize("gamma,c", [(100.0, 0.0), (30.0, 2.0), (7.0, 50.0)])
def test_capacity_loss_equals_its_formula_under_a_fixed_z(digits, gamma, c, closed_form):
    vae = (VAE if closed_form else StudentTPriorVAE)(digits.x_dim, latent_dim=3, hidden=(32,))
    x = digits.x_train[:16]
    loss_fn = capacity_module(vae, gamma=gamma)
    pyro.set_rng_seed(11)
    loss = float(loss_fn(x, c).detach())
    pyro.set_rng_seed(11)  # the same z the loss drew
    with torch.no_grad():
        z = poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
        distortion = -vae.likelihood(z).log_prob(x).sum()
        q = vae.posterior(x)
        if closed_form:  # KL(N(mu, sigma^2) || N(0, 1)) per dimension, written out
            mu, sigma = q.base_dist.loc, q.base_dist.scale
            kl = (0.5 * (mu**2 + sigma**2 - 1) - sigma.log()).sum(-1)  # (B,)
        else:  # the one-draw estimate log q(z|x) - log p(z), as the ELBO holds it
            kl = q.log_prob(z) - vae.prior().log_prob(z)
    expected = float(distortion + gamma * x.shape[0] * (kl.mean() - c).abs())
    assert loss == pytest.approx(expected, rel=1e-6)
    # C sits on both sides of the batch's mean KL across the cases
    assert (kl.mean() > c) == (c < 1.0)


def test_capacity_gradient_pushes_the_kl_towards_c(digits):
    """Below C the objective rewards more KL, above C it penalises it."""
    vae = VAE(digits.x_dim, latent_dim=3, hidden=(32,))
    x = digits.x_train[:16]
    scale_bias = vae.encoder.body[-1].bias
    loss_fn = capacity_module(vae, gamma=1000.0)
    grads = []
    for c in (0.0, 100.0):
        pyro.set_rng_seed(0)
        (grad,) = torch.autograd.grad(loss_fn(x, c), scale_bias)
        grads.append(grad[3:].sum())  # the encoder's raw scales: larger scale, less KL
    assert grads[0] < 0 < grads[1]


def test_capacity_training_steers_the_rate_to_c(digits):
    config = TrainConfig(epochs=6, batch_size=64, progress=False, device="cpu")
    steps_per_epoch = math.ceil(digits.x_train.shape[0] / config.batch_size)
    config = config.replace(objective="capacity", gamma=50.0)
    config = config.replace(capacity_max=6.0, capacity_steps=3 * steps_per_epoch)
    vae = VAE(digits.x_dim, latent_dim=4, hidden=(64,))
    result = fit(vae.model, vae.guide, digits, config)
    caps = [h["capacity"] for h in result.history]
    assert caps[0] == pytest.approx(6.0 * (steps_per_epoch - 1) / (3 * steps_per_epoch))
    assert caps[3:] == [6.0, 6.0, 6.0]
    assert all(h["beta"] == 1.0 for h in result.history)  # beta plays no part
    assert abs(result.last["rate"] - 6.0) < 1.0


def test_capacity_settings_are_validated_and_reach_the_config():
    with pytest.raises(UserError, match="unknown objective"):
        TrainConfig(objective="capcity").validate()
    with pytest.raises(UserError, match="--gamma must be positive"):
        TrainConfig(objective="capacity", gamma=0.0).validate()
    with pytest.raises(UserError, match="drop --beta"):
        TrainConfig(objective="capacity", beta=4.0).validate()
    args = parser().parse_args(
        ["train", "vae", "--objective", "capacity", "--gamma", "30", "--capacity-max", "12"]
        + ["--capacity-steps", "500"]
    )
    cfg = common.run_config(args, "vae").train
    assert (cfg.objective, cfg.gamma, cfg.capacity_max, cfg.capacity_steps) == (
        "capacity",
        30.0,
        12.0,
        500,
    )
