"""Beta schedules: pure functions of the step, checked against their formulas, and a
warm-up run whose recorded beta rises monotonically to the target."""

from __future__ import annotations

import math
from functools import partial

import pytest
from ppl_vae.models.vae import VAE

from ppl_vae.errors import UserError
from ppl_vae.infer import schedules
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.schedules import START, constant, cyclical, linear, sigmoid
from ppl_vae.infer.trainer import fit


def test_constant_is_beta_at_every_step():
    assert [constant(t, beta=2.5) for t in (0, 1, 10**6)] == [2.5, 2.5, 2.5]


def test_linear_values_at_known_steps():
    # s + (beta - s) * min(1, t / T) with s = 1e-3, beta = 4, T = 200
    assert linear(0, beta=4.0, warmup_steps=200) == pytest.approx(START)
    assert linear(50, beta=4.0, warmup_steps=200) == pytest.approx(START + (4 - START) * 0.25)
    assert linear(100, beta=4.0, warmup_steps=200) == pytest.approx(2.0005)
    assert linear(200, beta=4.0, warmup_steps=200) == 4.0
    assert linear(10_000, beta=4.0, warmup_steps=200) == 4.0
    assert linear(0, beta=3.0, warmup_steps=0) == 3.0  # no warm-up: the target at once


def test_linear_warmup_is_monotone_and_reaches_the_target():
    values = [linear(t, beta=2.0, warmup_steps=100) for t in range(150)]
    assert all(b > a for a, b in zip(values[:100], values[1:101]))  # strictly rising
    assert values[100:] == [2.0] * 50


def test_cyclical_is_periodic_with_a_ramp_then_a_plateau():
    kw = dict(beta=1.0, total_steps=400, cycles=4, ratio=0.5)  # period 100, ramp 50
    assert cyclical(0, **kw) == pytest.approx(START)
    assert cyclical(25, **kw) == pytest.approx(START + (1 - START) * 0.5)
    assert cyclical(50, **kw) == 1.0 and cyclical(99, **kw) == 1.0
    assert cyclical(100, **kw) == pytest.approx(START)  # the next cycle restarts
    for t in range(100):
        assert cyclical(t, **kw) == pytest.approx(cyclical(t + 100, **kw))
        assert cyclical(t, **kw) == pytest.approx(cyclical(t + 300, **kw))


def test_sigmoid_endpoints_midpoint_and_monotone():
    kw = dict(beta=2.0, warmup_steps=100, steepness=10.0)
    assert sigmoid(0, **kw) == pytest.approx(START)
    assert sigmoid(100, **kw) == pytest.approx(2.0)
    assert sigmoid(500, **kw) == pytest.approx(2.0)
    # symmetric logistic ramp: exactly half way at T/2
    assert sigmoid(50, **kw) == pytest.approx(START + (2.0 - START) / 2)
    # slow start, fast middle: below the linear ramp at T/4
    assert sigmoid(25, **kw) < linear(25, beta=2.0, warmup_steps=100)
    values = [sigmoid(t, **kw) for t in range(101)]
    assert all(b > a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_no_schedule_is_ever_zero(name):
    schedule = schedules.make(name, beta=0.5, warmup_steps=300, total_steps=1000, cycles=3)
    values = [schedule(t) for t in range(0, 1200)]
    assert min(values) > 0  # poutine.scale refuses 0
    assert max(values) == pytest.approx(0.5)


def test_make_rejects_bad_input():
    with pytest.raises(UserError, match="unknown beta schedule 'cosine'"):
        schedules.make("cosine")
    with pytest.raises(UserError, match="beta must be positive"):
        schedules.make("linear", beta=0.0)
    with pytest.raises(UserError, match="start above 0"):
        schedules.make("linear", beta=1.0, start=0.0)


def test_a_warmup_run_records_beta_rising_monotonically_to_the_target(digits):
    config = TrainConfig(epochs=4, batch_size=128, beta=4.0, progress=False, device="cpu")
    steps_per_epoch = math.ceil(digits.x_train.shape[0] / config.batch_size)
    config.beta_schedule, config.warmup_steps = "linear", 3 * steps_per_epoch
    vae = VAE(digits.x_dim, latent_dim=2, hidden=(32,))
    result = fit(vae.model, vae.guide, digits, config)
    betas = [h["beta"] for h in result.history]
    # the beta of each epoch's last step: (k * spe - 1) / (3 * spe) of the way, then 4
    expected = [linear(k * steps_per_epoch - 1, 4.0, 3 * steps_per_epoch) for k in (1, 2, 3)]
    assert betas[:3] == pytest.approx(expected)
    assert all(b > a for a, b in zip(betas, betas[1:]))
    assert betas[-1] == 4.0


def test_cosine_learning_rate_anneals_to_its_final_fraction():
    lr = partial(schedules.learning_rate, lr=0.1, total_steps=200, kind="cosine", final=0.01)
    assert lr(0) == pytest.approx(0.1)
    assert lr(100) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))
    assert lr(200) == pytest.approx(0.001) and lr(10_000) == pytest.approx(0.001)
    values = [lr(t) for t in range(0, 201, 10)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert schedules.learning_rate(123, 0.1, 200) == 0.1  # constant
    with pytest.raises(UserError, match="learning-rate schedule"):
        schedules.learning_rate(0, 0.1, 200, "triangle")


def test_the_trainer_sets_the_scheduled_learning_rate(digits):
    cfg = TrainConfig(epochs=2, lr=0.01, lr_schedule="cosine", lr_final=0.1, progress=False)
    vae = VAE(digits.x_dim, latent_dim=2, hidden=(16,))
    result = fit(vae.model, vae.guide, digits, cfg)
    last_step = result.step - 1
    expected = schedules.learning_rate(last_step, 0.01, result.step, "cosine", 0.1)
    assert result.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
