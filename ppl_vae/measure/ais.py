"""Annealed importance sampling of :math:`\\log p(x)`, with BDMC upper bounds.

AIS (Neal 2001) moves ``chains`` particles per example through densities between a
normalised start :math:`f_0` and the unnormalised posterior :math:`f_1 = p(x, z)`,

.. math::

    f_b(z) = q(z|x)^{1-b}\\, p(x, z)^{b} \\;\\; (\\texttt{start="guide"}), \\qquad
    f_b(z) = p(z)\\, p(x|z)^{b} \\;\\; (\\texttt{start="prior"}),

on a sigmoidal schedule :math:`0 = b_0 < \\dots < b_T = 1` (Grosse et al. 2015). With
:math:`z_0 \\sim f_0` and :math:`z_t` drawn by an HMC kernel that leaves :math:`f_{b_t}`
invariant, :math:`\\log w = \\sum_{t=1}^T \\log f_{b_t}(z_{t-1}) - \\log f_{b_{t-1}}(z_{t-1})`
has :math:`\\mathbb{E}[w] = p(x)`, so :math:`\\log \\frac1C \\sum_c w_c` is a stochastic lower
bound. Bidirectional Monte Carlo (Grosse et al. 2015; Wu et al. 2017) runs the chain
backwards from an exact posterior draw, available when :math:`(z, x)` is simulated from the
model: then :math:`\\mathbb{E}[w_{\\text{rev}}] = 1/p(x)` and
:math:`-\\log \\frac1C \\sum_c w_{\\text{rev},c}` is a stochastic upper bound.

The HMC kernel works on unconstrained values (``biject_to`` of each model site's support,
as Pyro's ``initialize_model``), integrates with Pyro's ``velocity_verlet``, accepts by
Metropolis-Hastings, and adapts one step size per example towards 65% acceptance during the
forward pass (Wu et al. 2017); the reverse pass replays those step sizes in reverse order.
All examples and chains are one tensor: one run of each program per leapfrog step. The
densities are the programs' own ``log_prob`` terms (:mod:`ppl_vae.traces`), with the
parameters fixed. Latent sites must lie inside the data plate (one value per example).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.ops.integrator import potential_grad, velocity_verlet
from torch.distributions import biject_to

from ppl_vae import traces
from ppl_vae.errors import UserError
from ppl_vae.measure.importance import check_estimable
from ppl_vae.measure.metrics import frozen, seeded
from ppl_vae.measure.stats import standard_error
from ppl_vae.programs import Programs, latent_names


@dataclass
class AISResult:
    """Per-example estimates ``(N,)``, their delta-method standard errors over chains,
    the mean HMC acceptance and the model evaluations spent per example."""

    log_likelihood: torch.Tensor
    se: torch.Tensor
    acceptance: float
    evaluations: int

    @property
    def mean(self) -> float:
        return float(self.log_likelihood.mean())

    @property
    def mean_se(self) -> float | None:
        return standard_error(self.log_likelihood)


def sigmoid_schedule(steps: int, delta: float = 4.0) -> torch.Tensor:
    """``steps + 1`` inverse temperatures from 0 to 1, dense at both ends."""
    s = torch.sigmoid(torch.linspace(-delta, delta, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


class Annealed:
    """The latent sites of ``pair`` on ``args`` as one unconstrained ``(C, B, D)`` tensor,
    and the terms :math:`(h, g)` with :math:`\\log f_b = h + b g` (plus the Jacobian)."""

    def __init__(self, pair: Programs, args: tuple, chains: int, start: str):
        if start not in ("guide", "prior"):
            raise UserError(f"AIS starts from 'guide' or 'prior', got {start!r}")
        self.pair, self.args, self.chains, self.start = pair, args, chains, start
        self.batch, self.dim = args[0].shape[0], -(pair.max_plate_nesting + 1)
        tr = self._trace(pair.guide if start == "guide" else pair.model, {})
        self.shapes, self.transforms = {}, {}
        # the latent sites of this batch's trace (they may vary with the batch)
        self.sites = tuple(latent_names(tr))
        mtr = self._trace(pair.model, {n: tr.nodes[n]["value"] for n in self.sites})
        for n in self.sites:
            v = tr.nodes[n]["value"]
            if v.shape[:2] != (chains, self.batch):
                raise UserError(f"latent site {n!r} is not inside the data plate")
            self.shapes[n] = v.shape[2:]
            self.transforms[n] = biject_to(mtr.nodes[n]["fn"].support)
        self.u0 = self.flatten({n: tr.nodes[n]["value"] for n in self.sites})
        self.observed = {
            k for k, v in mtr.nodes.items() if v["type"] == "sample" and v["is_observed"]
        } - set(self.sites)

    def _trace(self, fn, data: dict):
        fn = traces.in_particle_plate(poutine.condition(fn, data=data), self.chains, self.dim)
        with self.pair.scope():
            tr = poutine.trace(fn).get_trace(*self.args)
        tr.compute_log_prob()
        return tr

    def flatten(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        c, b = self.chains, self.batch
        parts = [self.transforms[n].inv(z[n]).reshape(c, b, -1) for n in self.sites]
        return torch.cat(parts, -1).detach()

    def terms(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(h, g, log|J|)`` at ``u``, each ``(C, B)``."""
        z, jac, start, c, b = {}, 0.0, 0, self.chains, self.batch
        for n in self.sites:
            size = math.prod(self.shapes[n])
            w = u[..., start : start + size].reshape(c, b, *self.shapes[n])
            z[n], start = self.transforms[n](w), start + size
            ladj = self.transforms[n].log_abs_det_jacobian(w, z[n])
            jac = jac + ladj.reshape(c, b, -1).sum(-1)
        mtr = self._trace(self.pair.model, z)
        one = lambda s: traces.per_example(traces.unscaled(s), b, c)  # noqa: E731 - nats
        sites = mtr.nodes.items()
        lik = sum(one(s) for k, s in sites if s["type"] == "sample" and k in self.observed)
        prior = sum(one(mtr.nodes[n]) for n in self.sites)
        if self.start == "prior":
            return prior, lik, jac
        gtr = self._trace(self.pair.guide, z)
        log_q = sum(one(gtr.nodes[n]) for n in self.sites)
        return log_q, lik + prior - log_q, jac


def _sweep(ann: Annealed, u, betas, step_size, leapfrog: int, schedule=None, target=0.65):
    """One AIS pass along ``betas``; returns ``(log w, step sizes used, acceptance)``.
    ``schedule`` (one step size per example per transition) replaces adaptation."""
    with torch.no_grad():
        _, g, _ = ann.terms(u)
    eps = u.new_full((ann.batch,), step_size)
    log_w, used, accepted = torch.zeros_like(g), [], []
    for i in range(1, len(betas)):
        log_w = log_w + float(betas[i] - betas[i - 1]) * g.detach()
        if i == len(betas) - 1:
            break
        b, cache = float(betas[i]), {}

        def potential(z, b=b, cache=cache):
            h, g, jac = ann.terms(z["u"])
            cache.update(energy=-(h + b * g + jac), g=g)
            return cache["energy"].sum()

        eps = schedule[i - 1] if schedule is not None else eps
        with torch.enable_grad():
            grads, _ = potential_grad(potential, {"u": u})
            e0, r = cache["energy"].detach(), torch.randn_like(u)
            z1, r1, _, _ = velocity_verlet(
                {"u": u}, {"u": r}, potential, lambda r: r, eps[None, :, None], leapfrog, grads
            )
        e1, g1 = cache["energy"].detach(), cache["g"].detach()
        d_h = e0 + 0.5 * r.pow(2).sum(-1) - e1 - 0.5 * r1["u"].pow(2).sum(-1)
        ok = torch.isfinite(d_h) & (torch.rand_like(d_h).log() < d_h)
        u, g = torch.where(ok[..., None], z1["u"].detach(), u), torch.where(ok, g1, g)
        used.append(eps)
        accepted.append(ok.float().mean())
        if schedule is None:
            rate = ok.float().mean(0)
            eps = (eps * torch.where(rate > target, 1.02, 0.98)).clamp(1e-4, 1.0)
    acc = float(torch.stack(accepted).mean()) if accepted else float("nan")
    return log_w, used, acc


def _estimate(log_w: torch.Tensor, sign: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``sign * log mean_c w_c`` per example and its delta-method standard error."""
    c = log_w.shape[0]
    est = log_w.logsumexp(0) - math.log(c)
    rel = (log_w - est).exp()
    se = rel.std(0) / math.sqrt(c) if c > 1 else torch.full_like(est, float("nan"))
    return sign * est, se


def _evaluations(steps: int, leapfrog: int, chains: int) -> int:
    return chains * (1 + max(steps - 1, 0) * (leapfrog + 1))


def ais_log_likelihood(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    steps: int = 1000,
    chains: int = 16,
    leapfrog: int = 5,
    step_size: float = 0.05,
    start: str = "guide",
    seed: int = 0,
) -> AISResult:
    """AIS estimates of :math:`\\log p(x_n)` for every row of ``x`` at once (a stochastic
    lower bound; see the module docstring)."""
    check_estimable(pair)
    if steps < 1 or chains < 1 or leapfrog < 1:
        raise UserError("AIS needs steps, chains and leapfrog steps of at least 1")
    args = pair.eval_args(x, y)
    with frozen(pair), seeded(seed, x.device), pyro.validation_enabled(False):
        ann = Annealed(pair, args, chains, start)
        log_w, _, acc = _sweep(ann, ann.u0, sigmoid_schedule(steps), step_size, leapfrog)
    est, se = _estimate(log_w)
    return AISResult(est, se, acc, _evaluations(steps, leapfrog, chains))


def simulate(pair: Programs, like: tuple) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``(z, x)`` drawn from the model (its observed sites unconditioned) on a batch shaped
    like ``like``: the latent values per site and the data, shaped like ``like[0]``."""
    if len(pair.data_sites) != 1:
        raise UserError(f"{pair.name} scores its data at several sites; cannot simulate x")
    with pair.scope(), torch.no_grad():
        tr = poutine.trace(poutine.uncondition(pair.model)).get_trace(*like)
    value = tr.nodes[pair.data_sites[0]]["value"]
    if value.numel() != like[0].numel():
        raise UserError(f"{pair.name}'s data site does not score x itself; cannot simulate x")
    latent = [n for n in latent_names(tr) if n not in pair.observed_sites]
    return {n: tr.nodes[n]["value"] for n in latent}, value.reshape(like[0].shape)


def bdmc(
    pair: Programs,
    like: torch.Tensor,
    y: torch.Tensor | None = None,
    n: int | None = None,
    steps: int = 1000,
    chains: int = 16,
    leapfrog: int = 5,
    step_size: float = 0.05,
    start: str = "guide",
    seed: int = 0,
) -> dict:
    """BDMC on ``n`` data points simulated from the model (``like``: rows the programs
    accept, values ignored): ``x`` and ``z`` simulated, ``lower`` (forward AIS) and
    ``upper`` (reverse AIS from the exact ``z``), each an :class:`AISResult`."""
    check_estimable(pair)
    n = like.shape[0] if n is None else n
    rows = torch.arange(n, device=like.device) % like.shape[0]
    like, y = like[rows], (None if y is None else y[rows])
    betas = sigmoid_schedule(steps)
    with frozen(pair), seeded(seed, like.device), pyro.validation_enabled(False):
        z, x = simulate(pair, pair.eval_args(like, y))
        ann = Annealed(pair, pair.eval_args(x, y), chains, start)
        log_w, used, acc = _sweep(ann, ann.u0, betas, step_size, leapfrog)
        exact = {k: v.expand(chains, *v.shape) for k, v in z.items()}
        back = _sweep(ann, ann.flatten(exact), betas.flip(0), step_size, leapfrog, used[::-1])
    evaluations = _evaluations(steps, leapfrog, chains)
    lower = AISResult(*_estimate(log_w), acc, evaluations)
    upper = AISResult(*_estimate(back[0], -1.0), back[2], evaluations)
    return {"x": x, "z": z, "lower": lower, "upper": upper}
