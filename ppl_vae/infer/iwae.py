"""The importance-weighted bound (IWAE, Burda et al. 2015) as a Pyro ELBO.

For each example :math:`n` and :math:`K` guide draws :math:`z_{kn} \\sim q(z \\mid x_n)`,

.. math::

    w_{kn} = \\log p(x_n, z_{kn}) - \\log q(z_{kn} \\mid x_n), \\qquad
    \\mathcal{L}_K = \\sum_n \\Big[\\operatorname{logsumexp}_k w_{kn} - \\log K\\Big]
        + \\frac1K \\sum_k g_k,

where :math:`w_{kn}` sums every site inside the data plate and :math:`g_k` every site outside
it (global sites). :math:`\\mathcal{L}_1` is the one-sample ELBO, :math:`\\mathbb{E}\\,
\\mathcal{L}_K` rises with :math:`K` and tends to :math:`\\log p(x)`. The loss is
:math:`-\\mathcal{L}_K`; its gradient is the IWAE gradient (self-normalised weights on the
reparameterised paths, plus a score-function term for non-reparameterised local sites).

The rule for plates. The *data plate* is the plate named ``data_plate`` (``"data"``, the
suite's convention) or, when no plate has that name, the plate whose size equals the batch
(the first argument's leading dimension). A site inside it adds to its example's
:math:`w_{kn}`, summed over its other plates. A site outside it is global: it is counted
once per particle, averaged over particles, outside every log-sum-exp (the ELBO treatment).
That is exact for observed or point-mass global sites (a parameter with a prior); for a
random global latent drawn per particle it is a surrogate, not a proven bound -- use
``pyro.infer.RenyiELBO(alpha=0)``, whose log-sum-exp runs over the whole batch, there. With
no data plate the whole trace is one example. All particles are drawn at once in an outer
``pyro.plate("particles", K, dim=-(max_plate_nesting + 1))``. Log-probabilities are taken
as scaled by ``poutine.scale`` (a trainer's beta on the latent sites acts inside the
weights); minibatch subsampling scales are not supported.

Why not ``RenyiELBO(alpha=0)``: when every site lies in the data plate its weights are per
example and its value equals this one, but a single global site makes it sum the plate
before the log-sum-exp (pyro issue #3104), it has no ``differentiable_loss`` (so no
``ELBOModule``) and it reads the loss to the host (``.item()``) every call.

Example::

    >>> import torch
    >>> from ppl_vae.models.vae import VAE
    >>> vae = VAE(x_dim=64, latent_dim=2)
    >>> loss = IWAE_ELBO(num_particles=5)(vae.model, vae.guide)
    >>> loss(torch.rand(8, 64)).shape
    torch.Size([])
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled
from pyro.util import check_if_enumerated, warn_if_nan

PARTICLES = "particles"


class IWAE_ELBO(ELBO):  # noqa: N801 -- named like Pyro's Trace_ELBO
    """The IWAE bound with ``num_particles`` = :math:`K` vectorised draws per example.

    :param num_particles: :math:`K`; ``1`` gives the one-sample ELBO.
    :param max_plate_nesting: plates nested in the programs, an int (the suite's: 1, the
        data plate); the particle plate sits just left of them.
    :param data_plate: the name of the plate over examples.
    """

    def __init__(
        self, num_particles: int = 2, max_plate_nesting: int = 1, data_plate: str = "data"
    ):
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        # Pyro's convention: max_plate_nesting counts the particle plate, at -max_plate_nesting.
        self.max_plate_nesting = int(max_plate_nesting) + 1
        self.data_plate = data_plate

    # -- traces ---------------------------------------------------------------------
    def _vectorized_num_particles(self, fn):
        # Always wrap, K = 1 included, so log-weights are (K, B) in every case.
        return pyro.plate(PARTICLES, self.num_particles, dim=-self.max_plate_nesting)(fn)

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    # -- the bound --------------------------------------------------------------------
    def log_weights(self, model, guide, *args, **kwargs):
        """``(w, g, score)``: local log-weights ``(K, B)`` (``B = 1`` without a data plate),
        global terms ``(K,)`` and the local score-function terms ``(K, B)``."""
        (model_trace, guide_trace) = next(self._get_traces(model, guide, args, kwargs))
        batch = _batch_size(args)
        plate = self._find_data_plate(model_trace, guide_trace, batch)
        k = self.num_particles
        p = self.max_plate_nesting
        local = global_ = score = 0.0
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for site in trace.nodes.values():
                if site["type"] != "sample":
                    continue
                data_dim = _plate_dim(site, plate)
                in_data = data_dim is not None
                term = _reduce(site["log_prob"], p, data_dim, k)
                if sign < 0:
                    sf = site["score_parts"].score_function
                    if not is_identically_zero(sf):
                        if not in_data:
                            raise NotImplementedError(
                                f"IWAE_ELBO: non-reparameterised global site {site['name']!r}"
                            )
                        score = score + _reduce(sf, p, data_dim, k)
                if in_data:
                    local = local + sign * term
                else:
                    global_ = global_ + sign * term
        device = _some_tensor(model_trace, guide_trace)
        local = _as(local, (k, batch if plate is not None else 1), device)
        global_ = _as(global_, (k,), device)
        score = _as(score, local.shape, device)
        return local, global_, score

    def bounds(self, w: torch.Tensor) -> torch.Tensor:
        """The bound of each independent group of particles per example, ``(G, B)``, from
        the log-weights ``(K, B)``; the objective is their mean over groups. IWAE: one
        group, :math:`\\operatorname{logsumexp}_k w_{kn} - \\log K` (subclasses change this
        alone: :mod:`ppl_vae.infer.miwae`, :mod:`ppl_vae.infer.ciwae`)."""
        return (w.logsumexp(0) - math.log(self.num_particles)).unsqueeze(0)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """:math:`-\\mathcal{L}_K` as a differentiable scalar tensor (no host read-back)."""
        w, g, score = self.log_weights(model, guide, *args, **kwargs)
        groups = self.bounds(w)  # (G, B)
        bound = groups.mean(0).sum() + g.mean()
        # Score-function term for non-reparameterised local sites: value zero, gradient
        # mean_g sum_n L_gn * grad sum_{k in g} log q(z_kn).
        score = score.reshape(groups.shape[0], -1, score.shape[-1]).sum(1)
        surrogate = (groups.detach() * (score - score.detach())).mean(0).sum()
        loss = -(bound + surrogate)
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """:math:`-\\mathcal{L}_K`, detached; a tensor, not a float (no host sync)."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).detach()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.detach()

    def _find_data_plate(self, model_trace, guide_trace, batch: int | None) -> str | None:
        frames = {
            f.name: f.size
            for trace in (model_trace, guide_trace)
            for site in trace.nodes.values()
            if site["type"] == "sample"
            for f in site["cond_indep_stack"]
            if f.name != PARTICLES and f.vectorized
        }
        if self.data_plate in frames:
            return self.data_plate
        by_size = [name for name, size in frames.items() if size == batch]
        return by_size[0] if len(by_size) == 1 else None


def _batch_size(args) -> int | None:
    x = args[0] if args else None
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim > 0 else None


def _plate_dim(site, name: str | None) -> int | None:
    """The dimension of plate ``name`` at ``site``, or None when the site is outside it."""
    return next((f.dim for f in site["cond_indep_stack"] if f.name == name), None)


def _reduce(lp, p: int, data_dim: int | None, k: int) -> torch.Tensor:
    """Sum a site's log-prob over every plate dimension but the particle dimension ``-p``
    and ``data_dim``; return ``(K, B)`` when ``data_dim`` is given, else ``(K,)``."""
    if not isinstance(lp, torch.Tensor):
        return lp
    lp = lp.reshape((1,) * max(p - lp.dim(), 0) + lp.shape)
    keep = {lp.dim() - p} | ({lp.dim() + data_dim} if data_dim is not None else set())
    dims = [d for d in range(lp.dim()) if d not in keep]
    if dims:
        lp = lp.sum(dims, keepdim=True)
    lp = lp.reshape(lp.shape[lp.dim() - p], -1) if data_dim is not None else lp.reshape(-1)
    return lp.expand(k, *lp.shape[1:]) if lp.shape[0] == 1 else lp


def _some_tensor(*traces) -> torch.Tensor:
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] == "sample" and isinstance(site["value"], torch.Tensor):
                return site["value"]
    return torch.zeros(())


def _as(value, shape, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        return torch.full(shape, float(value), dtype=like.dtype, device=like.device)
    return value.expand(shape) if value.shape != torch.Size(shape) else value


def from_config(config, max_plate_nesting: int = 1, dataset_size: int = 1) -> IWAE_ELBO:
    """The objective ``--objective iwae`` trains: the bound with ``num_particles`` samples."""
    return IWAE_ELBO(num_particles=config.num_particles, max_plate_nesting=max_plate_nesting)
