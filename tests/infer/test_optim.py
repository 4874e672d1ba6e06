"""Optimisers by name against torch's and Pyro's own (the same updates on the same
gradients), the learning-rate schedules against ``torch.optim.lr_scheduler``, gradient
clipping against ``clip_grad_norm_``, and the options from the CLI to a resumed run."""

from __future__ import annotations

import json

import pytest
import torch
from pyro.optim.adagrad_rmsprop import AdagradRMSProp
from pyro.optim.clipped_adam import ClippedAdam

from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer import adam
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.optim import make_optimizer, set_learning_rate, step_size

#: name, our options, the reference optimizer built the way torch or Pyro builds it.
CASES = [
    ("adam", {"betas": [0.8, 0.99], "weight_decay": 0.1}, lambda p: torch.optim.Adam(
        p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    ("adamw", {}, lambda p: torch.optim.AdamW(p, lr=0.01)),
    ("sgd", {"momentum": 0.9, "weight_decay": 0.01}, lambda p: torch.optim.SGD(
        p, lr=0.01, momentum=0.9, weight_decay=0.01)),
    ("adagrad", {}, lambda p: torch.optim.Adagrad(p, lr=0.01)),
    ("rmsprop", {"momentum": 0.5}, lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5)),
    ("clipped_adam", {"clip_norm": 0.5, "lrd": 0.9, "weight_decay": 0.1}, lambda p: ClippedAdam(
        p, lr=0.01, clip_norm=0.5, lrd=0.9, weight_decay=0.1)),
    ("adagrad_rmsprop", {"momentum": 0.3}, lambda p: AdagradRMSProp(p, eta=0.01, t=0.3)),
]  # fmt: skip


def gradients(steps: int = 6) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(3, 2, generator=g) * 3, torch.randn(4, generator=g)] for _ in range(steps)]


def run(optimizer, params, grads, config=None) -> list[torch.Tensor]:
    """Apply each step's gradients; with ``config`` set the learning rate as fit does."""
    for t, step_grads in enumerate(grads):
        if config is not None:
            set_learning_rate(optimizer, config, t, len(grads))
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach().clone() for p in params]


def fresh() -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 2, generator=g)), torch.nn.Parameter(torch.ones(4))]


@pytest.mark.parametrize("name, options, reference", CASES, ids=[c[0] for c in CASES])
def test_each_optimizer_makes_its_libraries_updates(name, options, reference):
    grads = gradients()
    config = TrainConfig(optimizer=name, lr=0.01, **options).validate()
    ours = run(make_optimizer(mine := fresh(), config), mine, grads, config)
    theirs = run(reference(other := fresh()), other, grads)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours[0], fresh()[0])  # it moved


def test_the_default_stays_the_suites_bit_exact_adam():
    assert isinstance(make_optimizer(fresh(), TrainConfig()), adam.Adam)


@pytest.mark.parametrize(
    "schedule, settings, torch_scheduler",
    [
        ("step", {"lr_gamma": 0.5, "lr_step_size": 3}, lambda o: torch.optim.lr_scheduler.StepLR(
            o, step_size=3, gamma=0.5)),
        ("multistep", {"lr_gamma": 0.3, "lr_milestones": [2, 5]},
         lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.3)),
        ("exponential", {"lr_gamma": 0.9},
         lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    ],
)  # fmt: skip
def test_learning_rate_schedules_are_torchs_schedulers_stepped_each_step(
    schedule, settings, torch_scheduler
):
    config = TrainConfig(lr=0.2, lr_schedule=schedule, **settings).validate()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = torch_scheduler(optimizer)
    for t in range(12):
        assert step_size(config, t, 12) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()


def test_grad_clip_rescales_the_whole_gradient_as_clip_grad_norm():
    grads = gradients()
    config = TrainConfig(optimizer="sgd", lr=0.1, grad_clip=0.5).validate()
    ours = run(make_optimizer(mine := fresh(), config), mine, grads, config)
    other = fresh()
    for step_grads in grads:
        for p, g in zip(other, step_grads):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(other, 0.5)
        with torch.no_grad():
            for p in other:
                p -= 0.1 * p.grad
    for a, b in zip(ours, other):
        torch.testing.assert_close(a, b)


def test_a_programs_train_defaults_choose_its_optimizer_and_options(digits):
    """sparse_gamma_def.py's main(): AdagradRMSProp with eta 4.5 and t 0.1, recommended by
    the program as ``train_defaults``."""
    from ppl_vae.models.vae import VAE

    from ppl_vae.infer.recommend import recommended_config

    class DEFLike(VAE):
        train_defaults = {"optimizer": "adagrad_rmsprop", "lr": 4.5, "momentum": 0.1}

    vae = DEFLike(x_dim=digits.x_dim, latent_dim=2)
    config = recommended_config(vae.model, vae.guide, epochs=1).validate()
    optimizer = make_optimizer(fresh(), config)
    assert isinstance(optimizer, AdagradRMSProp)
    assert optimizer.param_groups[0]["eta"] == 4.5 and optimizer.param_groups[0]["t"] == 0.1


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"momentum": 0.9}, "--momentum applies to sgd, rmsprop, adagrad_rmsprop"),
        ({"optimizer": "sgd", "lrd": 0.99}, "--lrd applies to clipped_adam"),
        ({"optimizer": "clipped_adam", "clip_norm": 0.0}, "--clip-norm must be positive"),
        ({"optimizer": "adamw", "betas": [0.9]}, "--betas takes two numbers"),
        ({"grad_clip": -1.0}, "--grad-clip must be 0"),
        ({"lr_schedule": "multistep"}, "needs --lr-milestones"),
        ({"lr_milestones": [5, 3]}, "--lr-milestones must increase"),
        ({"lr_gamma": 2.0}, "--lr-gamma must lie in"),
        ({"optimizer": "nadam"}, "unknown optimizer 'nadam'"),
    ],
)
def test_an_option_the_optimizer_does_not_take_is_refused(settings, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        TrainConfig(**settings).validate()


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, saved",
    [
        (  # dmm.py's ClippedAdam, an exponential schedule and whole-gradient clipping on top
            "--optimizer clipped_adam --lr 0.003 --clip-norm 10 --lrd 0.9999 "
            "--lr-schedule exponential --lr-gamma 0.999 --weight-decay 2.0 --grad-clip 50",
            {"optimizer": "clipped_adam", "lrd": 0.9999, "weight_decay": 2.0, "grad_clip": 50},
        ),
        (  # sparse_gamma_def.py's AdagradRMSProp, a multi-step schedule
            "--optimizer adagrad_rmsprop --lr 0.05 --momentum 0.1 --lr-schedule multistep "
            "--lr-milestones 20,40 --lr-gamma 0.5",
            {"optimizer": "adagrad_rmsprop", "momentum": 0.1, "lr_milestones": [20, 40]},
        ),
    ],
    ids=["clipped_adam", "adagrad_rmsprop"],
)
def test_pyros_optimizers_train_and_resume_bit_for_bit_from_the_cli(
    flags, saved, tmp_path, monkeypatch
):
    """From the CLI: the options recorded in config.json, and a run resumed after one
    epoch has the history of the run trained two epochs at once (the optimizer state and
    the learning rate as a function of the step survive the checkpoint)."""
    monkeypatch.chdir(tmp_path)
    flags = f"--data digits --latent-dim 2 --hidden 16 --no-progress {flags}".split()
    assert main(["train", "vae", *flags, "--epochs", "2", "--out", "whole"]) == 0
    assert main(["train", "vae", *flags, "--epochs", "1", "--out", "part"]) == 0
    assert main(["train", "vae", *flags, "--epochs", "2", "--out", "part", "--resume"]) == 0
    config = json.loads((tmp_path / "whole" / "config.json").read_text())["train"]
    assert {k: config[k] for k in saved} == saved
    whole, part = (
        json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "part")
    )
    assert part["history"] == whole["history"]
    assert whole["history"][1]["test_elbo"] != whole["history"][0]["test_elbo"]


@pytest.mark.parametrize(
    "flags",
    [
        "--momentum 0.9",
        "--optimizer clipped_adam --lrd 0",
        "--betas 0.9,x",
        "--lr-schedule multistep",
        "--optimizer lbfgs --batch-size 100000 --grad-clip 1",
    ],
)
def test_a_bad_optimizer_flag_is_one_error_line_and_writes_nothing(flags, tmp_path, capsys):
    rc = main(["train", "vae", "--data", "digits", *flags.split(), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
