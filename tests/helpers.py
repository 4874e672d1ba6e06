"""Small shorthands for tests of the suite's own models (objects with model and guide)."""

from __future__ import annotations

import torch

from ppl_vae import traces
from ppl_vae.objective import Objective, make_elbo
from ppl_vae.programs import Programs, from_object
from ppl_vae.train import FitResult, TrainConfig, fit


def pair_of(module, x: torch.Tensor | None = None) -> Programs:
    """The module's programs, traced once on ``x`` (or on random rows of its width)."""
    if x is None:
        x = torch.rand(2, module.x_dim)
    return from_object(module, x[:2])


def elbo_module(module, kind: str = "trace", num_particles: int = 1) -> Objective:
    return Objective(pair_of(module), make_elbo(kind, num_particles))


def log_prob_terms(module, x: torch.Tensor, particles: int | None = None) -> dict:
    return traces.terms(pair_of(module, x), (x,), particles)


def fit_module(module, data, config: TrainConfig | None = None, **kw) -> FitResult:
    return fit(module.model, module.guide, data, config, **kw)
