"""The ELBO estimators, by name (``--elbo``).

ELBOs: ``trace`` (:class:`Trace_ELBO`: Pyro's ``Trace_ELBO`` estimator without its host
reads, see below), ``meanfield`` (:class:`TraceMeanField_ELBO`: the KL analytically where
``kl_divergence`` knows the pair) and ``enum`` (``TraceEnum_ELBO``: sums
out discrete latent sites marked for enumeration, as the semi-supervised VAE does).

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

import pyro.infer
import torch
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import is_identically_zero

from ppl_vae.errors import UserError


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
    """Pyro's ``TraceMeanField_ELBO`` whose ``differentiable_loss`` returns its surrogate.

    Its loss and surrogate are the same sum (every guide site is reparameterised; the KL
    is analytic where ``kl_divergence`` knows the pair), so the surrogate is the loss, with
    Pyro's value and gradients. Pyro's version adds ``loss + (surrogate - float(surrogate))``:
    a host read each step, and a constant frozen into a trace of the loss.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            _, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + surrogate / self.num_particles
        return torch.as_tensor(loss)


def _detach(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


ELBOS = {
    "trace": Trace_ELBO,
    "meanfield": TraceMeanField_ELBO,
    "enum": pyro.infer.TraceEnum_ELBO,
}


def make_elbo(kind: str = "trace", num_particles: int = 1, max_plate_nesting: int = 1):
    """A Pyro ELBO by name (see the module docstring); particles are vectorised."""
    if kind not in ELBOS:
        raise UserError(f"unknown ELBO {kind!r}; choose one of {', '.join(ELBOS)}")
    options = {}
    if kind == "enum":  # a labelled batch (y observed) has nothing to enumerate
        options["strict_enumeration_warning"] = False
    return ELBOS[kind](
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
        **options,
    )


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> pyro.infer.ELBO:
    """The objective ``--objective elbo`` trains: the ``--elbo`` estimator, beta applied
    by the trainer to the latent sites."""
    return make_elbo(config.elbo, config.num_particles, max_plate_nesting)
