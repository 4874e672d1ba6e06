"""Schedules for the KL weight beta: pure functions of the optimisation step.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from ppl_vae.errors import UserError

START = 1e-3


def constant(step: int, beta: float = 1.0, **_) -> float:
    return float(beta)


def linear(step: int, beta: float = 1.0, warmup_steps: int = 1000, start: float = START, **_):
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
    if warmup_steps <= 0:
        return float(beta)
    t = min(1.0, step / warmup_steps)

    def s(u):
        return 1.0 / (1.0 + math.exp(-steepness * (u - 0.5)))

    ramp = (s(t) - s(0.0)) / (s(1.0) - s(0.0))
    return start + (beta - start) * ramp


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "linear": linear,
    "cyclical": cyclical,
    "sigmoid": sigmoid,
}


def make(name: str, **params) -> Callable[[int], float]:
    """The schedule ``name`` with its parameters bound: a function of the step alone."""
    if name not in SCHEDULES:
        raise UserError(f"unknown beta schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if params.get("beta", 1.0) <= 0:
        raise UserError(f"beta must be positive (poutine.scale refuses 0), got {params['beta']}")
    return partial(SCHEDULES[name], **params)
