"""Optimisers by name with their options, gradient clipping and the learning rate per step.

``--optimizer`` names one of (each with its own defaults for the options left unset):

- ``adam`` (the default; Kingma & Ba 2015): :class:`ppl_vae.infer.adam.Adam` on the CPU,
  ``torch.optim.Adam(fused=True)`` on CUDA, ``torch.optim.Adam`` with ``--betas`` or
  ``--weight-decay``; ``adamw`` (Loshchilov & Hutter 2019, decoupled weight decay,
  torch's default 0.01);
- ``clipped_adam``: Pyro's ``ClippedAdam`` (``dmm.py``, ``scanvi.py``): each gradient
  element clamped to ``[-clip_norm, clip_norm]`` (default 10), then Adam with L2 weight
  decay, the learning rate multiplied by ``lrd`` before every step (default 1), so step
  :math:`t` (counted from 1) uses :math:`\\eta\\, \\mathrm{lrd}^t`;
- ``sgd`` (``momentum``, ``weight_decay``), ``adagrad``, ``rmsprop`` (``momentum``): torch's;
- ``adagrad_rmsprop``: Pyro's ``AdagradRMSProp`` (Kucukelbir et al. 2017, eqs. 10-11;
  ``sparse_gamma_def.py``): ``--lr`` is its ``eta`` and ``--momentum`` its ``t``;
- ``lbfgs``: full-batch L-BFGS with a strong-Wolfe line search (Nocedal & Wright 2006).

``--grad-clip C`` rescales the gradient of all parameters together to a Euclidean norm of
at most C before every step (``torch.nn.utils.clip_grad_norm_``), for any optimizer but
L-BFGS. The learning rate is a pure function of the step (:func:`learning_rate`: the
schedules of :mod:`ppl_vae.infer.schedules`), set before each step by
:func:`set_learning_rate`, so a resumed run takes the very steps it would have taken.

Example::

    >>> import torch
    >>> from ppl_vae.infer.config import TrainConfig
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = make_optimizer([w], TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9))
    >>> type(opt).__name__, opt.param_groups[0]["momentum"]
    ('SGD', 0.9)
    >>> cfg = TrainConfig(lr=1.0, lr_schedule="step", lr_gamma=0.5, lr_step_size=10)
    >>> [learning_rate(cfg, t, 100) for t in (0, 9, 10, 25)]
    [1.0, 1.0, 0.5, 0.25]
"""

from __future__ import annotations

from typing import Any

import torch

from ppl_vae.data.dataset import Dataset
from ppl_vae.errors import UserError
from ppl_vae.infer import adam, distributed, schedules
from ppl_vae.infer.config import TrainConfig

#: ``optimizer="lbfgs"``: iterations of one ``torch.optim.LBFGS.step`` (one epoch) and the
#: curvature pairs it keeps.
LBFGS_ITERATIONS, LBFGS_HISTORY = 20, 50


def _options(config: TrainConfig) -> dict[str, Any]:
    """The options given for the configured optimizer, in its constructor's names."""
    name, out = config.optimizer, {}
    if config.weight_decay is not None:
        out["weight_decay"] = config.weight_decay
    if config.betas is not None:
        out["betas"] = tuple(config.betas)
    if config.momentum is not None:
        out["t" if name == "adagrad_rmsprop" else "momentum"] = config.momentum
    if config.clip_norm is not None:
        out["clip_norm"] = config.clip_norm
    if config.lrd is not None:
        out["lrd"] = config.lrd
    return out


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer | adam.Adam:
    """The trainer's optimizer (see the module docstring). Adam without options:
    ``torch.optim.Adam(fused=True)`` on CUDA; elsewhere :class:`ppl_vae.infer.adam.Adam`,
    the multi-tensor (``foreach``) update of ``torch.optim.Adam`` bit for bit, which spares
    a run the import of ``torch._dynamo`` that every ``torch.optim`` optimizer makes (~1.6 s
    of CPU). ``lbfgs``: :data:`LBFGS_ITERATIONS` iterations per step; its own stopping tests
    are off but for a loss that no longer changes at all (the trainer's ``grad_tolerance``
    decides)."""
    params = list(params)
    name, options = config.optimizer, _options(config)
    if name == "lbfgs":
        return torch.optim.LBFGS(
            params,
            lr=config.lr,
            max_iter=LBFGS_ITERATIONS,
            history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=1e-12,
        )
    cuda = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    if name == "adam" and not options and not config.grad_clip:
        if cuda:
            return torch.optim.Adam(params, lr=config.lr, fused=True)
        return adam.Adam(params, lr=config.lr)
    if name == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr, **options)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=config.lr, **options)
    elif name == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, **options)
    elif name == "adagrad":
        optimizer = torch.optim.Adagrad(params, lr=config.lr, **options)
    elif name == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=config.lr, **options)
    elif name == "clipped_adam":
        from pyro.optim.clipped_adam import ClippedAdam

        optimizer = ClippedAdam(params, lr=config.lr, **options)
    elif name == "adagrad_rmsprop":
        from pyro.optim.adagrad_rmsprop import AdagradRMSProp

        optimizer = AdagradRMSProp(params, eta=config.lr, **options)
    else:  # TrainConfig.validate refuses other names
        raise UserError(f"unknown optimizer {name!r}")
    if config.grad_clip:
        optimizer.register_step_pre_hook(_clip(float(config.grad_clip)))
    return optimizer


def _clip(max_norm: float):
    def hook(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    return hook


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate the schedule gives at ``step`` (``--lr-schedule``), a pure function
    of the step: ``constant``, ``cosine`` (to ``lr_final * lr`` over the run), ``step``
    (:math:`\\eta\\gamma^{\\lfloor t/s \\rfloor}`), ``multistep`` (:math:`\\eta\\gamma^{k}`,
    k the milestones passed) and ``exponential`` (:math:`\\eta\\gamma^t`), each counting
    optimizer steps from 0 (``torch.optim.lr_scheduler``'s StepLR, MultiStepLR and
    ExponentialLR stepped once per optimizer step). ClippedAdam's ``lrd`` is on top
    (:func:`step_size`)."""
    return schedules.learning_rate(
        step,
        config.lr,
        total_steps,
        config.lr_schedule,
        config.lr_final,
        gamma=config.lr_gamma,
        step_size=config.lr_step_size,
        milestones=config.lr_milestones,
    )


def step_size(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate the optimizer step ``step`` (from 0) really uses: the schedule's,
    times ClippedAdam's ``lrd`` to the power ``step + 1``."""
    lr = learning_rate(config, step, total_steps)
    if config.optimizer == "clipped_adam" and config.lrd is not None:
        lr *= config.lrd ** (step + 1)
    return lr


def set_learning_rate(optimizer, config: TrainConfig, step: int, total_steps: int) -> None:
    """Set the optimizer's learning rate for step ``step`` (before it is taken): ``lr`` of
    every group; ClippedAdam multiplies its own by ``lrd`` inside ``step()``, so it gets
    :func:`step_size` divided by ``lrd``; AdagradRMSProp's step size is ``eta``."""
    lr = learning_rate(config, step, total_steps)
    if config.optimizer == "clipped_adam" and config.lrd is not None:
        lr *= config.lrd**step
    key = "eta" if config.optimizer == "adagrad_rmsprop" else "lr"
    for group in optimizer.param_groups:
        group[key] = lr


def check_optimizer(config: TrainConfig, data: Dataset) -> None:
    """What :meth:`TrainConfig.validate` cannot see: L-BFGS and ``grad_tolerance`` need the
    whole training set in every step (a fixed objective, an exact gradient), and L-BFGS
    the same rows at every step (no dynamic binarisation) in one process."""
    n = data.x_train.shape[0]
    for wanted, name in (
        (config.optimizer == "lbfgs", "--optimizer lbfgs"),
        (config.grad_tolerance > 0, "--grad-tolerance"),
    ):
        if wanted and config.batch_size < n:
            raise UserError(
                f"{name} needs full-batch training: --batch-size {config.batch_size} is less "
                f"than the {n} training rows; give --batch-size {n} or more"
            )
    if config.optimizer == "lbfgs" and data.binarize == "dynamic":
        raise UserError(
            "--optimizer lbfgs needs the same training rows at every step; --binarize dynamic "
            "draws new ones each epoch: use adam or a static binarisation"
        )
    if config.optimizer == "lbfgs" and distributed.active():
        raise UserError("--optimizer lbfgs runs in one process; run it without torchrun")
