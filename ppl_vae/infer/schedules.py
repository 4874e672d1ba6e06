"""Schedules for the KL weight beta and the learning rate: pure functions of the step.

The trainer evaluates the schedule at each step and passes ``beta`` to the model and
guide; the model never sees an epoch counter. ``poutine.scale`` refuses a scale of 0,
so every schedule starts at a small positive ``start`` rather than 0.

- constant: :math:`\\beta(t) = \\beta`
- linear warm-up: :math:`\\beta(t) = s + (\\beta - s)\\min(1, t / T)`
- cyclical (Fu et al. 2019): within each of ``cycles`` periods of length
  :math:`P = T_{total}/c`, rise linearly over the first ``ratio`` of the period, then hold:
  :math:`\\beta(t) = s + (\\beta - s)\\min(1, (t \\bmod P) / (r P))`
- sigmoid ramp: :math:`\\beta(t) = s + (\\beta - s)\\,\\sigma(k (t/T - 1/2))`, rescaled to
  run exactly from ``s`` at 0 to ``beta`` at :math:`T`.

Example::

    >>> linear(0, beta=1.0, warmup_steps=100), linear(50, beta=1.0, warmup_steps=100)
    (0.001, 0.5005)
    >>> schedule = make("cyclical", beta=4.0, total_steps=100, cycles=2)
    >>> schedule(0) == schedule(50), schedule(25)
    (True, 4.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from ppl_vae.errors import UserError
from ppl_vae.infer.config import BETA_SCHEDULES, LR_SCHEDULES

START = 1e-3


def constant(step: int, beta: float = 1.0, **_) -> float:
    """:math:`\\beta(t) = \\beta` for every step."""
    return float(beta)


def linear(
    step: int, beta: float = 1.0, warmup_steps: int = 1000, start: float = START, **_
) -> float:
    """Linear warm-up from ``start`` at step 0 to ``beta`` at ``warmup_steps``, then flat."""
    if warmup_steps <= 0:
        return float(beta)
    return start + (beta - start) * min(1.0, step / warmup_steps)


def cyclical(
    step: int,
    beta: float = 1.0,
    total_steps: int = 10000,
    cycles: int = 4,
    ratio: float = 0.5,
    start: float = START,
    **_,
) -> float:
    """Cyclical annealing (Fu et al. 2019): ``cycles`` linear ramps of length
    ``ratio * total_steps / cycles``, each followed by a plateau at ``beta``."""
    period = max(1.0, total_steps / max(1, cycles))
    phase = (step % period) / (ratio * period)
    return start + (beta - start) * min(1.0, phase)


def sigmoid(
    step: int,
    beta: float = 1.0,
    warmup_steps: int = 1000,
    steepness: float = 10.0,
    start: float = START,
    **_,
) -> float:
    """A logistic ramp of slope ``steepness`` rescaled to run from ``start`` at step 0
    exactly to ``beta`` at ``warmup_steps``, then flat."""
    if warmup_steps <= 0:
        return float(beta)
    t = min(1.0, step / warmup_steps)

    def s(u: float) -> float:
        return 1.0 / (1.0 + math.exp(-steepness * (u - 0.5)))

    ramp = (s(t) - s(0.0)) / (s(1.0) - s(0.0))
    return start + (beta - start) * ramp


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "linear": linear,
    "cyclical": cyclical,
    "sigmoid": sigmoid,
}
assert tuple(SCHEDULES) == BETA_SCHEDULES  # the names ``--beta-schedule`` offers


def make(name: str, **params) -> Callable[[int], float]:
    """The schedule ``name`` with its parameters bound: a function of the step alone."""
    if name not in SCHEDULES:
        raise UserError(f"unknown beta schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if params.get("beta", 1.0) <= 0:
        raise UserError(f"beta must be positive (poutine.scale refuses 0), got {params['beta']}")
    if params.get("start", START) <= 0:
        raise UserError(
            f"a schedule must start above 0 (poutine.scale refuses 0), got start={params['start']}"
        )
    if not 0 < params.get("ratio", 0.5) <= 1:
        raise UserError(f"the cyclical ramp ratio must lie in (0, 1], got {params['ratio']}")
    return partial(SCHEDULES[name], **params)


def learning_rate(
    step: int,
    lr: float,
    total_steps: int,
    kind: str = "constant",
    final: float = 0.01,
    gamma: float = 0.1,
    step_size: int = 1000,
    milestones: Sequence[int] = (),
) -> float:
    """The optimizer's step size at ``step``, also a pure function of the step:
    ``constant`` is :math:`\\eta`; ``cosine`` anneals from :math:`\\eta` to
    :math:`f\\eta` over the run, :math:`\\eta_t = \\eta\\,(f + (1 - f)\\tfrac12(1 + \\cos
    \\pi \\min(1, t/T)))` (smaller late steps settle the Monte Carlo noise of the ELBO's
    gradient, so a fit lands closer to its optimum); ``step`` is
    :math:`\\eta\\gamma^{\\lfloor t/s \\rfloor}`, ``multistep`` :math:`\\eta\\gamma^k` with
    :math:`k` the milestones :math:`\\le t`, ``exponential`` :math:`\\eta\\gamma^t` (as
    ``torch.optim.lr_scheduler``'s StepLR, MultiStepLR and ExponentialLR stepped once per
    optimizer step).

    >>> learning_rate(0, 0.1, 100, "cosine"), learning_rate(100, 0.1, 100, "cosine")
    (0.1, 0.001)
    >>> learning_rate(30, 1.0, 100, "multistep", gamma=0.5, milestones=[10, 20, 40])
    0.25
    """
    if kind == "constant":
        return float(lr)
    if kind == "step":
        return lr * gamma ** (step // max(1, step_size))
    if kind == "multistep":
        return lr * gamma ** sum(1 for m in milestones if m <= step)
    if kind == "exponential":
        return lr * gamma**step
    if kind != "cosine":
        raise UserError(
            f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(LR_SCHEDULES)}"
        )
    t = min(1.0, step / max(1, total_steps))
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))
