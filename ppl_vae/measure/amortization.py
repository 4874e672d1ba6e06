"""The amortisation gap (Cremer, Li & Duvenaud 2018, "Inference suboptimality in VAEs").

The gap between :math:`\\log p(x)` and the encoder's ELBO splits in two,

.. math::

    \\log p(x) - \\mathcal{L}[q_\\phi] =
    \\underbrace{\\log p(x) - \\mathcal{L}[q^*]}_{\\text{approximation gap}}
    + \\underbrace{\\mathcal{L}[q^*] - \\mathcal{L}[q_\\phi]}_{\\text{amortisation gap}},
    \\qquad q^* = \\arg\\max_{q \\in \\mathcal{Q}} \\mathcal{L}[q],

where :math:`q_\\phi(z|x)` is the amortised guide and :math:`q^*` the best member of its
family for that one point. Per point, the guide is traced and every latent site whose
distribution is ``Normal`` (possibly ``Independent``) or ``Delta`` gets free parameters, a
location and a log-scale, initialised at the guide's values for that point; the guide then
runs with those sites' distributions replaced (the plates and every other statement stay
the program's own), and Adam maximises the reparameterised ELBO of each point with the
model's parameters fixed until the windowed mean ELBO gains less than ``tol`` nats per
point twice running. For a hierarchical guide the per-point family is mean-field over
the sites (each site's location no longer follows the draws above it). The best ELBO is
the better of the optimised and the initial guide, both estimated with the same draws (so
the amortisation gap is at least 0, with a small upward bias from that maximum);
:math:`\\log p(x)` is the importance-weighted estimate (Burda et al. 2016) with the
optimised guide as proposal. Each number is a mean over the points with its standard
error. For a point-mass (all ``Delta``) guide the optimum is MAP and log p(x) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ppl_vae import traces
from ppl_vae.errors import UserError
from ppl_vae.measure.metrics import frozen, seeded
from ppl_vae.measure.stats import mean_and_se
from ppl_vae.programs import Programs


def _family(fn) -> tuple[str, torch.Tensor, torch.Tensor | None, int]:
    """``(kind, loc, scale, event dims)`` of a Normal / Independent(Normal) / Delta."""
    event = 0
    while isinstance(fn, dist.Independent):
        event, fn = event + fn.reinterpreted_batch_ndims, fn.base_dist
    if isinstance(fn, dist.Normal):
        return "normal", fn.loc, fn.scale, event
    if isinstance(fn, dist.Delta):
        return "delta", fn.v, None, event + fn.event_dim
    raise UserError(
        f"the per-point guide needs Normal or Delta latent sites, got {type(fn).__name__}"
    )


class PerPoint(Messenger):
    """The guide with each latent site's distribution replaced by one of free parameters:
    ``params[name] = (loc, log_scale or None, event dims)``."""

    def __init__(self, params: dict):
        super().__init__()
        self.params = params

    def _pyro_sample(self, msg):
        if msg["name"] not in self.params:
            return
        loc, log_scale, event = self.params[msg["name"]]
        if log_scale is None:
            fn = dist.Delta(loc, event_dim=event)
        else:
            fn = dist.Normal(loc, log_scale.exp()).to_event(event)
        msg["fn"] = fn.expand(msg["fn"].batch_shape)


def initial_params(pair: Programs, args: tuple) -> dict:
    """Free parameters at the guide's values for each point of ``args``."""
    with pair.scope(), torch.no_grad():
        tr = poutine.trace(pair.guide).get_trace(*args)
    out = {}
    for name in pair.latent_sites:
        kind, loc, scale, event = _family(tr.nodes[name]["fn"])
        shape = tr.nodes[name]["value"].shape
        loc = loc.detach().expand(shape).clone().requires_grad_()
        log_scale = None if scale is None else scale.detach().log().expand(shape).clone()
        out[name] = (loc, None if log_scale is None else log_scale.requires_grad_(), event)
    return out


def _log_weights(pair: Programs, args: tuple, particles: int, guide=None) -> torch.Tensor:
    model_tr, guide_tr = traces.trace_pair(pair, args, particles, guide=guide)
    t = traces.terms_of(pair, model_tr, guide_tr, args, particles)
    return t["log_lik"] + t["log_prior"] - t["log_q"]  # (particles, B)


def _maximise(
    log_weights: Callable[[], torch.Tensor],
    opt: torch.optim.Optimizer,
    steps: int,
    window: int,
    tol: float,
) -> tuple[int, bool]:
    """Ascend the per-point ELBOs (the mean of ``log_weights()`` over its particles) for at
    most ``steps`` steps, until two windows of ``window`` steps in a row gained less than
    ``tol`` nats on average; returns the steps run and whether that happened."""
    history, previous, calm, step = [], None, 0, 0
    for step in range(1, steps + 1):  # noqa: B007 - ``step`` is reported
        opt.zero_grad()
        elbo = log_weights().mean(0)
        (-elbo.sum()).backward()
        opt.step()
        history.append(elbo.detach())
        if step % window == 0:
            current = torch.stack(history[-window:]).mean(0)
            gain = math.inf if previous is None else float((current - previous).mean())
            calm = calm + 1 if gain < tol else 0
            if calm == 2:
                return step, True
            previous = current
    return step, False


def amortization_gap(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    steps: int = 2000,
    lr: float = 0.02,
    particles: int = 16,
    window: int = 50,
    tol: float = 1e-3,
    elbo_samples: int = 1000,
    iwae_samples: int = 1000,
    seed: int = 0,
) -> dict:
    """Encoder ELBO, best per-point ELBO, :math:`\\log p(x)` and the two gaps for the
    points ``x`` (all optimised at once, each with its own parameters): each as ``<key>``
    (mean, nats) and ``<key>_se``; ``steps`` run and whether the tolerance was met.
    ``log_likelihood`` and ``approximation_gap`` are ``None`` for a point-mass guide."""
    if steps < 1 or window < 1 or particles < 1 or x.shape[0] < 1:
        raise UserError("the per-point optimisation needs steps, window, particles and x")
    if pair.global_sites:
        raise UserError(
            f"{pair.name} has global latent sites ({', '.join(pair.global_sites)}): the "
            "amortisation gap compares per-example guides, which those sites do not have"
        )
    args = pair.eval_args(x, y)
    with frozen(pair), seeded(seed, x.device), pyro.validation_enabled(False):
        params = initial_params(pair, args)
        guide = PerPoint(params)(pair.guide)
        leaves = [p for loc, ls, _ in params.values() for p in (loc, ls) if p is not None]
        opt = torch.optim.Adam(leaves, lr=lr)
        step, converged = _maximise(
            lambda: _log_weights(pair, args, particles, guide), opt, steps, window, tol
        )
        with torch.no_grad():
            with seeded(seed + 1, x.device):
                encoder = _log_weights(pair, args, elbo_samples).mean(0)
            with seeded(seed + 1, x.device):
                optimised = _log_weights(pair, args, elbo_samples, guide).mean(0)
            best = torch.maximum(encoder, optimised)
            log_px = None
            if not pair.point_mass:
                lw = _log_weights(pair, args, iwae_samples, guide)
                log_px = lw.logsumexp(0) - math.log(iwae_samples)
    values = {
        "encoder_elbo": encoder,
        "best_elbo": best,
        "log_likelihood": log_px,
        "approximation_gap": None if log_px is None else log_px - best,
        "amortization_gap": best - encoder,
    }
    record: dict = {"points": int(x.shape[0]), "steps": step, "converged": converged}
    for key, v in values.items():
        record[key], record[f"{key}_se"] = (None, None) if v is None else mean_and_se(v)
    return record
