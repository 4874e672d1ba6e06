"""The ELBO estimators, by name (``--elbo``).

ELBOs: ``auto`` (the default: ``meanfield`` where the pair allows it, else ``trace``;
:func:`choose`), ``trace`` (:class:`Trace_ELBO`: Pyro's ``Trace_ELBO`` estimator without its
host reads, see below), ``meanfield`` (:class:`TraceMeanField_ELBO`: the KL in closed form
at the sites where it is valid, ``Programs.analytic_kl_sites``) and ``enum``
(``TraceEnum_ELBO``: sums out discrete latent sites marked for enumeration, as the
semi-supervised VAE does), ``tracegraph`` (:class:`TraceGraph_ELBO`: Pyro's, with the
baselines AIR uses) and ``renyi`` (:class:`RenyiELBO`: Pyro's Renyi bound of order
``--renyi-alpha`` over ``--num-particles`` draws) and ``tmc`` (:class:`TraceTMC_ELBO`:
Pyro's tensor Monte Carlo bound, ``--num-particles`` draws of each latent site).

``auto`` resolves from the pair's first trace: ``meanfield`` when every latent site of the
guide is reparameterised, none is enumerated, the guide samples the latent sites in the
model's order (so each site's closed-form KL is conditioned on parents drawn from the guide
before it: Pyro's mean-field requirement) and at least one site's KL has a closed form;
``trace`` otherwise. Under ``meanfield`` a site without a closed form is estimated from its
draw (``log p - log q``), as ``trace`` does. Either way the objective's value has the same
expectation; the closed form only removes the KL's sampling noise, which matters most where
beta multiplies it (a beta-VAE). :class:`ELBOChoice` records what was chosen and, per latent
site, ``analytic``, ``sampled`` or ``enumerated`` (``metrics.json``: ``elbo``, ``kl``).

Pyro's ``Trace_ELBO.differentiable_loss`` reads the loss back to the host twice per step
(``torch_item`` per sample site and on the surrogate, and ``warn_if_nan``), so every step
waits for the device. :class:`Trace_ELBO` computes the same value and the same gradients
from tensors alone; the trainer reads its running loss once per log interval and raises a
clear error there when it is not finite.

Example::

    >>> type(make_elbo("meanfield")).__name__
    'TraceMeanField_ELBO'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyro.infer
import torch
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import get_dependent_plate_dims, is_identically_zero, torch_sum

from ppl_vae.errors import UserError
from ppl_vae.programs import Programs, closed_form_kl


class Trace_ELBO(pyro.infer.Trace_ELBO):
    """Pyro's ``Trace_ELBO`` whose ``differentiable_loss`` never reads the device.

    Same estimator, value and gradients as ``pyro.infer.Trace_ELBO`` (its value is summed
    in the tensors' precision rather than in Python floats): the loss is
    ``loss + (surrogate - surrogate.detach())`` with ``loss`` the detached ELBO estimate,
    and simply the surrogate when every guide site is reparameterised (then the two are
    the same sum). No NaN warning hook: a non-finite loss is the trainer's error.
    """

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        """``(loss, surrogate)`` of one particle as tensors; ``loss`` is None when it is
        the surrogate's own value (every guide site reparameterised)."""
        terms = [s["log_prob_sum"] for s in model_trace.nodes.values() if s["type"] == "sample"]
        minus = []  # guide log-densities, each with the surrogate term it gives
        exact, log_r = True, None
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            log_prob, score_function_term, entropy_term = site["score_parts"]
            if entropy_term is log_prob and is_identically_zero(score_function_term):
                minus.append((site["log_prob_sum"], site["log_prob_sum"]))
                continue
            exact = False
            term = 0.0
            if not is_identically_zero(entropy_term):
                term = term + entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                weight = log_r.sum_to(site["cond_indep_stack"])
                term = term - (weight * score_function_term).sum()
            minus.append((site["log_prob_sum"], term))
        surrogate = 0.0
        for t in terms:
            surrogate = surrogate + t
        for _, t in minus:
            surrogate = surrogate - t
        if exact:
            return None, -surrogate
        elbo = 0.0
        for t in terms:
            elbo = elbo + t.detach()
        for t, _ in minus:
            elbo = elbo - t.detach()
        return -elbo, -surrogate

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate, exact = 0.0, 0.0, True
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss_particle, surrogate_particle = self._differentiable_loss_particle(
                model_trace, guide_trace
            )
            if loss_particle is None:
                loss_particle = _detach(surrogate_particle)
            else:
                exact = False
            surrogate = surrogate + surrogate_particle / self.num_particles
            loss = loss + loss_particle / self.num_particles
        if exact:
            return torch.as_tensor(surrogate)
        surrogate = torch.as_tensor(surrogate)
        return loss + (surrogate - surrogate.detach())


class TraceMeanField_ELBO(pyro.infer.TraceMeanField_ELBO):
    """Pyro's ``TraceMeanField_ELBO`` whose ``differentiable_loss`` returns its surrogate,
    with the closed-form KL at the sites named in ``analytic_sites``.

    Its loss and surrogate are the same sum (every guide site is reparameterised), so the
    surrogate is the loss, with Pyro's value and gradients. Pyro's version adds ``loss +
    (surrogate - float(surrogate))``: a host read each step, and a constant frozen into a
    trace of the loss. ``analytic_sites`` (set by the trainer from the pair,
    ``Programs.analytic_kl_sites``) restricts the closed form to the sites where it is
    valid, each KL with its site's scale and mask; None keeps Pyro's rule (every site
    whose pair ``kl_divergence`` knows, scaled by the guide site).
    """

    analytic_sites: frozenset[str] | None = None

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        if self.analytic_sites is None:
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            q_site = guide_trace.nodes[name]
            kl = closed_form_kl(q_site, site) if name in self.analytic_sites else None
            if kl is None:
                elbo = elbo + site["log_prob_sum"] - q_site["score_parts"].entropy_term.sum()
            else:
                elbo = elbo - kl.sum()
        for name, q_site in guide_trace.nodes.items():  # auxiliary sites of the guide
            if q_site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - q_site["score_parts"].entropy_term.sum()
        return -_detach(elbo), -elbo

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            _, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + surrogate / self.num_particles
        return torch.as_tensor(loss)


class TraceGraph_ELBO(pyro.infer.TraceGraph_ELBO):
    """Pyro's ``TraceGraph_ELBO`` (``--elbo tracegraph``: the score-function estimator with
    each non-reparameterised site's downstream costs only, and the baselines AIR declares
    through ``infer={"baseline": ...}``) as a differentiable loss: its value is the negative
    ELBO, its gradient that of Pyro's surrogate loss, the baselines' own loss included (so
    a baseline network trains with the programs). Not traced (:attr:`untraceable` says
    why)."""

    untraceable = (
        "the tracegraph estimator updates its baselines' moving averages in the param store "
        "at every step, which a trace would not repeat"
    )

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        elbo, surrogate = torch.as_tensor(elbo), torch.as_tensor(surrogate)
        return -elbo.detach() + (surrogate - surrogate.detach())


class RenyiELBO(pyro.infer.RenyiELBO):
    """Pyro's ``RenyiELBO`` (``--elbo renyi``, Li & Turner 2016; ``alpha`` 0, its default,
    is the importance-weighted bound of Burda et al. 2015) as a differentiable loss: the
    value and gradient of Pyro's ``loss_and_grads``, without its host read.

    .. math::

        \\mathcal{L}_\\alpha = \\frac{1}{1-\\alpha} \\log \\frac1K \\sum_k
            \\Big(\\frac{p(x, z_k)}{q(z_k \\mid x)}\\Big)^{1-\\alpha}, \\qquad z_k \\sim q.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbos, surrogates = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            dims = get_dependent_plate_dims(model_trace.nodes.values())
            elbo, surrogate = 0.0, 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_prob = torch_sum(site["log_prob"], dims)
                    elbo, surrogate = elbo + log_prob.detach(), surrogate + log_prob
            for name, site in guide_trace.nodes.items():
                if site["type"] != "sample":
                    continue
                _, score_function_term, entropy_term = site["score_parts"]
                log_prob = torch_sum(site["log_prob"], dims)
                elbo = elbo - log_prob.detach()
                if not is_identically_zero(entropy_term):
                    surrogate = surrogate - log_prob
                    if not is_identically_zero(score_function_term):
                        raise UserError(
                            f"--elbo renyi cannot train the partly reparameterised site {name} "
                            "(pyro issue 1222); use --elbo trace"
                        )
                if not is_identically_zero(score_function_term):
                    surrogate = surrogate + (self.alpha / (1.0 - self.alpha)) * log_prob
            elbos.append(torch.as_tensor(elbo))
            surrogates.append(torch.as_tensor(surrogate))
        if self.vectorize_particles and self.num_particles > 1:
            elbo, surrogate = elbos[0], surrogates[0]
        else:
            elbo, surrogate = torch.stack(elbos), torch.stack(surrogates)
        log_weights = (1.0 - self.alpha) * elbo
        log_mean = torch.logsumexp(log_weights, 0, keepdim=True) - math.log(self.num_particles)
        value = log_mean.sum() / (1.0 - self.alpha)
        weights = (log_weights - log_mean).exp()
        surrogate_elbo = (weights * surrogate).sum() / self.num_particles
        return -value + (surrogate_elbo.detach() - surrogate_elbo)


class TraceTMC_ELBO(pyro.infer.TraceTMC_ELBO):
    """Pyro's ``TraceTMC_ELBO`` (``--elbo tmc``: tensor Monte Carlo, Aitchison 2019) with
    every sample site of the guide drawn ``num_samples`` times in parallel
    (``config_enumerate(guide, "parallel", num_samples=K)``, ``K`` = ``--num-particles``)
    and the bound contracted over all their combinations: for one latent site it is the
    importance-weighted bound with K draws."""

    def __init__(self, num_samples: int = 1, max_plate_nesting: int = 1):
        super().__init__(max_plate_nesting=max_plate_nesting)
        self.num_samples = num_samples

    def differentiable_loss(self, model, guide, *args, **kwargs):
        sampled = pyro.infer.config_enumerate(guide, "parallel", num_samples=self.num_samples)
        return super().differentiable_loss(model, sampled, *args, **kwargs)


def _detach(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class ELBOChoice:
    """The estimator an objective trains with: ``elbo`` (``trace``, ``meanfield``, ``enum``,
    or the objective's own name), per latent site how its KL term is computed (``kl``:
    ``analytic``, ``sampled`` or ``enumerated``) and why (``reason``, one line)."""

    elbo: str
    kl: dict[str, str]
    reason: str

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` keeps: ``elbo``, ``kl`` and ``elbo_reason``."""
        return {"elbo": self.elbo, "kl": dict(self.kl), "elbo_reason": self.reason}


def choose(pair: Programs, config) -> ELBOChoice:
    """The estimator ``config`` trains ``pair`` with (see the module docstring): ``auto``
    resolved from the pair's trace; an explicit ``meanfield`` refused where its closed form
    would be wrong (a guide that samples the latent sites out of the model's order, or a
    site drawn without ``rsample``); the objectives other than ``elbo`` estimate every KL
    from draws."""
    sites = pair.all_latent_sites
    sampled = dict.fromkeys(sites, "sampled")
    if config.objective == "capacity":  # its penalty's KL: closed where that is valid
        kl = {n: "analytic" if n in pair.analytic_kl_sites else "sampled" for n in sites}
        why = "--objective capacity: the penalty's KL in closed form where valid, else drawn"
        return ELBOChoice("capacity", kl, why)
    if config.objective != "elbo":
        return ELBOChoice(
            config.objective, sampled, f"--objective {config.objective} estimates the KL from draws"
        )
    kind = config.elbo
    if kind == "enum":
        kl = {n: "enumerated" if n in pair.enumerated else "sampled" for n in sites}
        return ELBOChoice("enum", kl, "enum: discrete sites summed out, the others from draws")
    if kind == "trace":
        return ELBOChoice("trace", sampled, "trace (asked for): every KL from one draw")
    if kind == "tracegraph":
        return ELBOChoice(
            kind,
            sampled,
            "tracegraph (asked for): every KL from draws, score-function "
            "terms with downstream costs and the programs' baselines",
        )
    if kind == "renyi":
        alpha = getattr(config, "renyi_alpha", None) or 0.0
        return ELBOChoice(
            kind,
            sampled,
            f"renyi (asked for): the Renyi bound of order {alpha:g} over "
            f"{config.num_particles} draws",
        )
    if kind == "tmc":
        return ELBOChoice(
            kind,
            sampled,
            f"tmc (asked for): tensor Monte Carlo, {config.num_particles} draws of each site",
        )
    blocker = _mean_field_blocker(pair)
    if kind == "meanfield" and blocker:
        raise UserError(
            f"--elbo meanfield would compute a wrong KL for {pair.name}: {blocker}; use "
            "--elbo auto (the default) or --elbo trace"
        )
    analytic = {n: "analytic" if n in pair.analytic_kl_sites else "sampled" for n in sites}
    if kind == "auto" and not blocker and not pair.analytic_kl_sites:
        blocker = "no latent site's KL has a closed form (kl_divergence knows none of the pairs)"
    if blocker:
        return ELBOChoice("trace", sampled, f"trace: {blocker}")
    closed = ", ".join(pair.analytic_kl_sites) or "no site"
    rest = [n for n in sites if n not in pair.analytic_kl_sites]
    reason = f"meanfield: the closed-form KL at {closed}" + (
        f"; from draws at {', '.join(rest)} (no closed form)" if rest else ""
    )
    return ELBOChoice("meanfield", analytic, reason)


def _mean_field_blocker(pair: Programs) -> str | None:
    """Why the closed-form KL of a mean-field ELBO would be wrong for the pair, or None."""
    if not pair.mean_field:
        return (
            f"the guide samples {', '.join(pair.all_latent_sites)} but the model "
            f"{', '.join(pair.model_order)} (not mean-field: a site's model parents must be "
            "drawn from the guide before it)"
        )
    if pair.enumerated:
        return f"{', '.join(pair.enumerated)} are enumerated (use --elbo enum)"
    if not pair.reparameterized:
        return "some latent site of the guide has no rsample (its gradient needs a score function)"
    return None


ELBOS = {
    "trace": Trace_ELBO,
    "meanfield": TraceMeanField_ELBO,
    "enum": pyro.infer.TraceEnum_ELBO,
    "tracegraph": TraceGraph_ELBO,
    "renyi": RenyiELBO,
    "tmc": TraceTMC_ELBO,
}


def make_elbo(
    kind: str = "trace", num_particles: int = 1, max_plate_nesting: int = 1, alpha: float = 0.0
):
    """A Pyro ELBO by name (see the module docstring); particles are vectorised; ``alpha``
    is ``renyi``'s order."""
    if kind not in ELBOS:
        raise UserError(f"unknown ELBO {kind!r}; choose one of {', '.join(ELBOS)}")
    options = {}
    if kind == "enum":  # a labelled batch (y observed) has nothing to enumerate
        options["strict_enumeration_warning"] = False
    if kind == "renyi":
        options["alpha"] = alpha
    if kind == "tmc":
        return TraceTMC_ELBO(num_samples=num_particles, max_plate_nesting=max_plate_nesting)
    return ELBOS[kind](
        num_particles=num_particles,
        # a baseline network sees one batch, not (particles, batch): tracegraph's particles
        # run one after another, as in Pyro's AIR example
        vectorize_particles=num_particles > 1 and kind != "tracegraph",
        max_plate_nesting=max_plate_nesting,
        **options,
    )


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> pyro.infer.ELBO:
    """The objective ``--objective elbo`` trains: the ``--elbo`` estimator (``auto`` is
    resolved by the trainer, :func:`choose`, before this is called; here it means
    ``trace``), beta applied by the trainer to the latent sites."""
    kind = "trace" if config.elbo == "auto" else config.elbo
    alpha = getattr(config, "renyi_alpha", None) or 0.0
    return make_elbo(kind, config.num_particles, max_plate_nesting, alpha=alpha)
