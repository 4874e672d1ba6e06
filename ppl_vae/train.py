"""One generic trainer for any (model, guide) pair: SVI on the ELBO with one torch optimizer.

The loss is Pyro's ELBO as an ``nn.Module`` (:func:`ppl_vae.objective.elbo_module`),
divided by the minibatch size so the reported figure is the mean per-example negative
ELBO in nats. Each step draws a ``randperm`` slice of the preloaded training tensor,
evaluates the beta schedule at the global step and passes ``beta`` to the programs.

:func:`fit` returns a :class:`FitResult`: the trained module, the optimizer, the per-epoch
history and the wall-clock seconds. With ``out`` it also writes a checkpoint every epoch
(atomically, see :mod:`ppl_vae.checkpoint`), from which ``resume=True`` continues exactly
where the run stopped: same weights, optimizer moments and random streams.

Example::

    >>> from ppl_vae import data
    >>> from models.vae import VAE
    >>> ds = data.load("digits")
    >>> result = fit(VAE(ds.x_dim, latent_dim=2), ds, TrainConfig(epochs=1, progress=False))
    >>> sorted(result.history[-1])[:3]
    ['active_units', 'beta', 'distortion']
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from ppl_vae import capacity, checkpoint, objective, schedules
from ppl_vae.autoencoder import Autoencoder
from ppl_vae.data import Dataset, minibatches
from ppl_vae.errors import UserError
from ppl_vae.evaluate import evaluate

TRAIN_EVAL_LIMIT = 10000  # examples of the training set scored each epoch


@dataclass
class TrainConfig:
    """Everything the trainer needs; JSON-serialisable (it goes into ``config.json``)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (anneals to lr_final * lr)
    lr_final: float = 0.01
    seed: int = 0
    device: str = "auto"
    elbo: str = "trace"  # trace | meanfield
    num_particles: int = 1
    beta: float = 1.0
    beta_schedule: str = "constant"  # constant | linear | cyclical | sigmoid
    warmup_steps: int = 0
    cycles: int = 4
    objective: str = "elbo"  # elbo | capacity (gamma * |KL - C|, Burgess et al. 2018)
    gamma: float = 100.0
    capacity_max: float = 10.0  # nats per example, reached after capacity_steps
    capacity_steps: int = 1000
    eval_batch_size: int = 1000
    progress: bool = True

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "num_particles", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1")
        if not self.lr > 0:
            raise UserError(f"the learning rate must be positive, got {self.lr}")
        schedules.learning_rate(0, self.lr, 1, self.lr_schedule, self.lr_final)
        if not self.beta > 0:
            raise UserError(f"beta must be positive (poutine.scale refuses 0), got {self.beta}")
        if self.objective not in ("elbo", "capacity"):
            raise UserError(f"unknown objective {self.objective!r}; choose elbo or capacity")
        if self.objective == "capacity":
            capacity.check(self.gamma, self.capacity_max, self.capacity_steps)
            if self.beta != 1 or self.beta_schedule != "constant":
                raise UserError("--objective capacity replaces beta by gamma; drop --beta options")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class FitResult:
    """The record of a run: the trained module and optimizer, per-epoch ``history``
    (dicts with ``epoch``, ``step``, ``beta``, ``train_objective``, ``train_elbo``,
    ``test_elbo``, ``rate``, ``distortion``, ``kl_per_dim``, ``active_units``,
    ``test_recon_mse``), the global ``step`` and the training ``seconds``."""

    module: Autoencoder
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}; use auto, cpu or cuda") from None


def beta_schedule(config: TrainConfig, steps_per_epoch: int):
    """The configured schedule as a pure function of the step."""
    return schedules.make(
        config.beta_schedule,
        beta=config.beta,
        warmup_steps=config.warmup_steps,
        total_steps=config.epochs * steps_per_epoch,
        cycles=config.cycles,
    )


def epoch_record(result: FitResult, data: Dataset, beta: float, objective_mean: float) -> dict:
    """Evaluate the module at beta = 1 on the test set and a slice of the training set."""
    cfg = result.config
    test = evaluate(result.module, data.x_test, cfg.eval_batch_size, seed=cfg.seed)
    train = evaluate(result.module, data.x_train[:TRAIN_EVAL_LIMIT], cfg.eval_batch_size, cfg.seed)
    return {
        "epoch": len(result.history) + 1,
        "step": result.step,
        "beta": beta,
        "train_objective": objective_mean,
        "train_elbo": train["elbo"],
        "test_elbo": test["elbo"],
        "rate": test["rate"],
        "distortion": test["distortion"],
        "kl_per_dim": test["kl_per_dim"],
        "active_units": test["active_units"],
        "test_recon_mse": test["recon_mse"],
    }


def training_loss(loss_fn: torch.nn.Module, xb: torch.Tensor, beta: float, step: int, **kw):
    """The mean per-example loss; a non-finite loss (or a distribution that refuses its
    diverged parameters) is a :class:`UserError` rather than silent NaN (Pyro only warns)."""
    advice = "lower --lr or check the data and likelihood"
    try:
        loss = loss_fn(xb, beta=beta, **kw) / xb.shape[0]
    except ValueError as exc:
        if "Expected parameter" not in str(exc) and "invalid values" not in str(exc):
            raise
        raise UserError(
            f"training diverged at step {step} (the loss became NaN); {advice}"
        ) from None
    if not torch.isfinite(loss):
        raise UserError(f"the loss became {float(loss)} at step {step}; {advice}")
    return loss


def fit(
    module: Autoencoder,
    data: Dataset,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    loss_fn: torch.nn.Module | None = None,
) -> FitResult:
    """Train ``module`` on ``data``; see the module docstring.

    ``loss_fn`` replaces the default objective (``elbo_module(module, config.elbo)``) with
    any module mapping ``(x, beta=...)`` to a loss to minimise, summed over the batch.
    """
    config = config or TrainConfig()
    config.validate()
    device = resolve_device(config.device)
    pyro.set_rng_seed(config.seed)
    module.to(device)
    data = data.to(device)
    module.check(data.x_train)
    module.check(data.x_test)
    capacity_at = None  # the capacity objective's C, a pure function of the step
    if config.objective == "capacity":
        capacity_at = capacity.make_capacity(config.capacity_max, config.capacity_steps)
        loss_fn = loss_fn or capacity.capacity_module(module, config.gamma, config.num_particles)
    loss_fn = loss_fn or objective.elbo_module(module, config.elbo, config.num_particles)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    shuffle = torch.Generator().manual_seed(config.seed)
    result = FitResult(module, optimizer, config)
    n = data.x_train.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = beta_schedule(config, steps_per_epoch)
    total_steps = config.epochs * steps_per_epoch

    if resume:
        state = checkpoint.load(out, map_location=device)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        result.history, result.step = state["history"], state["step"]
        result.seconds = state["seconds"]
        shuffle.set_state(state["rng"]["shuffle"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)

    start_epoch = len(result.history)
    bar = tqdm(
        total=(config.epochs - start_epoch) * steps_per_epoch,
        disable=not config.progress,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for _ in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            module.train()
            x_epoch = data.train_epoch(shuffle)
            total, beta = 0.0, config.beta
            for idx in minibatches(n, config.batch_size, shuffle):
                xb = x_epoch[idx.to(device)]
                beta = schedule(result.step)
                for group in optimizer.param_groups:
                    group["lr"] = schedules.learning_rate(
                        result.step, config.lr, total_steps, config.lr_schedule, config.lr_final
                    )
                kw = {"capacity": capacity_at(result.step)} if capacity_at else {}
                loss = training_loss(loss_fn, xb, beta, result.step, **kw)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                result.step += 1
                total += float(loss.detach()) * xb.shape[0]
                bar.update(1)
                bar.set_postfix(
                    elbo=f"{-float(loss.detach()):.2f}", beta=f"{beta:.3g}", refresh=False
                )
            result.seconds += time.perf_counter() - t0
            if not all(torch.isfinite(p).all() for p in module.parameters()):
                raise UserError(f"training diverged in epoch {len(result.history) + 1}; lower --lr")
            result.history.append(epoch_record(result, data, beta, total / n))
            if capacity_at:
                result.history[-1]["capacity"] = capacity_at(result.step - 1)
            bar.set_postfix(test_elbo=f"{result.last['test_elbo']:.2f}", beta=f"{beta:.3g}")
            if out is not None:
                save_checkpoint(result, out, shuffle)
    finally:
        bar.close()
    return result


def save_checkpoint(result: FitResult, out: str | Path, shuffle: torch.Generator) -> None:
    """Everything :func:`fit` needs to continue bit for bit: weights, optimizer moments,
    history and the random streams (all uint8 or float tensors, no pickles)."""
    rng = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if torch.cuda.is_available() and next(result.module.parameters()).is_cuda:
        rng["cuda"] = torch.cuda.get_rng_state()
    checkpoint.save(
        out,
        {
            "step": result.step,
            "epoch": len(result.history),
            "seconds": result.seconds,
            "history": result.history,
            "module": result.module.state_dict(),
            "optimizer": result.optimizer.state_dict(),
            "rng": rng,
        },
    )
