"""Per-example terms of the ELBO and the standard test-set diagnostics.

For a model with prior :math:`p(z)`, likelihood :math:`p(x|z)` and guide :math:`q(z|x)`:

.. math::

    \\mathrm{ELBO}(x) = \\underbrace{\\mathbb{E}_{q}[\\log p(x|z)]}_{-\\text{distortion}}
        - \\underbrace{\\mathrm{KL}(q(z|x) \\,\\|\\, p(z))}_{\\text{rate}}

The rate is computed analytically where ``torch.distributions.kl_divergence`` knows the
pair (Gaussian guide, Gaussian prior) and by Monte Carlo from Pyro's traces otherwise.
Active units follow Burda et al. (2016): unit :math:`u` is active when
:math:`\\mathrm{Var}_x(\\mathbb{E}_q[z_u|x]) > 0.01`.

Every figure is a mean per example, in nats. Evaluation is at ``beta = 1`` and runs under
its own seed, so the same weights always give the same numbers.

Example::

    >>> from models.vae import VAE
    >>> out = evaluate(VAE(x_dim=64, latent_dim=2), torch.rand(50, 64))
    >>> sorted(out)[:4]
    ['active_units', 'distortion', 'elbo', 'kl_per_dim']
"""

from __future__ import annotations

import contextlib

import pyro
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from ppl_vae.autoencoder import Autoencoder

ACTIVE_UNIT_THRESHOLD = 0.01


def trace_pair(
    module: Autoencoder, x: torch.Tensor, beta: float = 1.0, particles: int | None = None
):
    """Run the guide, then the model replayed on the guide's draws; both traces with
    per-site ``log_prob`` of batch shape ``(B,)``, or ``(particles, B)`` when ``particles``
    is given (both programs then run inside ``pyro.plate("particles", particles, dim=-2)``)."""
    guide, model = module.guide, module.model
    if particles is not None:
        guide, model = _in_particle_plate(guide, particles), _in_particle_plate(model, particles)
    guide_tr = poutine.trace(guide).get_trace(x, beta)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, beta)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    return model_tr, guide_tr


def _in_particle_plate(fn, particles: int):
    """``fn`` run inside an outer plate of ``particles`` independent draws (dim -2)."""

    def wrapped(*args, **kwargs):
        with pyro.plate("particles", particles, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


def log_prob_terms(
    module: Autoencoder, x: torch.Tensor, beta: float = 1.0, particles: int | None = None
) -> dict:
    """One-sample per-example terms from Pyro's traces: ``log_lik`` (observed sites),
    ``log_prior`` (latent sites of the model) and ``log_q`` (the guide), each ``(B,)``;
    with ``particles=P``, ``P`` independent draws per example, each term ``(P, B)``.

    ``log_lik + log_prior - log_q`` is a one-sample ELBO estimate; its log-mean-exp over
    many draws is the importance-weighted bound.
    """
    model_tr, guide_tr = trace_pair(module, x, beta, particles)
    shape = x.shape[:1] if particles is None else (particles, x.shape[0])
    zero = x.new_zeros(shape)
    terms = {"log_lik": zero, "log_prior": zero, "log_q": zero}
    for site in model_tr.nodes.values():
        if site["type"] == "sample":
            key = "log_lik" if site["is_observed"] else "log_prior"
            terms[key] = terms[key] + site["log_prob"]
    for site in guide_tr.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            terms["log_q"] = terms["log_q"] + site["log_prob"]
    return terms


def kl_terms(module: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Analytic :math:`\\mathrm{KL}(q(z|x)\\|p(z))` per example ``(B,)`` and per dimension
    ``(B, d)``, or ``(None, None)`` when the pair has no closed form."""
    q = module.posterior(x)
    p = module.prior().expand(q.batch_shape)
    try:
        q_base, p_base = q.base_dist, p.base_dist
        per_dim = kl_divergence(q_base, p_base)
        return per_dim.sum(-1), per_dim
    except (NotImplementedError, AttributeError):
        try:
            return kl_divergence(q, p), None
        except NotImplementedError:
            return None, None


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None):
    """Run with a fixed torch seed and restore the caller's RNG state afterwards."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def evaluate(
    module: Autoencoder,
    x: torch.Tensor,
    batch_size: int = 1000,
    seed: int = 0,
) -> dict:
    """Mean per-example ``elbo``, ``distortion``, ``rate``, ``kl_per_dim``, ``active_units``
    and ``recon_mse`` (squared error summed over pixels) of ``module`` on ``x``.

    ``rate``, ``kl_per_dim`` and ``active_units`` are ``None`` for a model without a latent
    prior (``has_prior = False``); its ``elbo`` is then the reconstruction log-likelihood.
    """
    was_training = module.training
    module.eval()
    sums: dict[str, torch.Tensor] = {}
    means = []

    def add(key, value):
        sums[key] = sums.get(key, 0) + value.sum(0)

    try:
        with seeded(seed, x.device):
            for xb in x.split(batch_size):
                terms = log_prob_terms(module, xb)
                distortion = -terms["log_lik"]
                kl, kl_dim = kl_terms(module, xb) if module.has_prior else (None, None)
                if kl is None:  # Monte Carlo rate from the traces
                    kl = terms["log_q"] - terms["log_prior"]
                add("distortion", distortion)
                add("rate", kl)
                if kl_dim is not None:
                    add("kl_per_dim", kl_dim)
                code = module.encode(xb)
                means.append(code)
                add("recon_mse", (module.decode(code) - xb).pow(2).sum(-1))
    finally:
        module.train(was_training)
    n = x.shape[0]
    out = {k: v / n for k, v in sums.items()}
    result = {
        "elbo": float(-(out["distortion"] + out["rate"])),
        "distortion": float(out["distortion"]),
        "rate": float(out["rate"]) if module.has_prior else None,
        "kl_per_dim": out["kl_per_dim"].tolist() if "kl_per_dim" in out else None,
        "active_units": None,
        "recon_mse": float(out["recon_mse"]),
    }
    if module.has_prior:
        codes = torch.cat(means)
        variance = codes.var(0) if n > 1 else torch.zeros_like(codes[0])
        result["active_units"] = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
    return result
