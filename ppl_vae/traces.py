"""Everything the engine measures, read off the traces of a program pair.

For a batch :math:`x_{1..B}` the guide is traced, the model replayed on its draws (Pyro's
``get_importance_trace``, which also checks that model and guide agree on their sites),
and each site's ``log_prob`` is reduced to one number per example:

.. math::

    \\log p(x_n \\mid z) = \\sum_{\\text{observed}} \\ell_s(n), \\quad
    \\log p(z) = \\sum_{\\text{latent, model}} \\ell_s(n), \\quad
    \\log q(z \\mid x_n) = \\sum_{\\text{latent, guide}} \\ell_s(n),

where :math:`\\ell_s(n)` sums site :math:`s`'s log-density over every dimension except the
data plate's (the plate named ``data``, else the plate whose size is the batch), in nats of
the unscaled model (without the site's ``poutine.scale``; ``elbo_scaled`` keeps it: the
program's own units). The sites are those of the traces computed on: they may come and
go with the batch (one per time step). A site outside the data plate (a global latent) is
shared: it contributes :math:`\\ell_s / N` to each example, :math:`N` the size of the set
the batch comes from (the batch by default; a plate the program subsamples itself gives
its full size), so the sum over the set counts it once, as Pyro scales a subsampled
plate. Vectorised particles run the pair inside an outer ``pyro.plate`` left of the
program's own plates; the terms are then ``(P, B)``. Sites the model enumerates are summed
out by ``TraceEnum_ELBO``'s own machinery (:func:`enum_elbo`).

From the same traces: codes (the guide's mean at each local latent site, or its draw where
the distribution has no mean), reconstructions (the model's observed mean with the latent sites
conditioned on those codes), generation (the model under ``poutine.uncondition``) and
decoding of given codes (the model conditioned on them).

Example::

    >>> import torch
    >>> from ppl_vae.programs import from_object
    >>> from ppl_vae.models.vae import VAE
    >>> pair = from_object(VAE(x_dim=64, latent_dim=2), torch.rand(3, 64))
    >>> t = terms(pair, (torch.rand(5, 64),), particles=7)
    >>> t["log_lik"].shape, codes(pair, (torch.rand(5, 64),)).shape
    (torch.Size([7, 5]), torch.Size([5, 2]))
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from ppl_vae.data.dataset import all_finite
from ppl_vae.errors import UserError
from ppl_vae.programs import (
    Programs,
    analytic_sites,
    closed_form_kl,
    latent_names,
)

PARTICLES = "_ppl_vae_particles"


def in_particle_plate(fn, particles: int, dim: int):
    """``fn`` run inside an outer plate of ``particles`` independent draws at ``dim``."""

    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLES, particles, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def trace_pair(pair: Programs, args: tuple, particles: int | None = None, model=None, guide=None):
    """``(model_trace, guide_trace)`` with ``log_prob`` computed; ``particles`` draws
    vectorised in an outer plate. ``model``/``guide`` replace the pair's programs (e.g.
    wrapped in a scale messenger)."""
    model, guide = model or pair.model, guide or pair.guide
    nesting = pair.max_plate_nesting
    if particles is not None:
        dim = -(nesting + 1)
        model, guide = (
            in_particle_plate(model, particles, dim),
            in_particle_plate(guide, particles, dim),
        )
        nesting += 1
    with pair.scope():
        return get_importance_trace("flat", nesting, model, guide, args, {})


def per_example(
    site: dict[str, Any],
    batch: int,
    particles: int | None = None,
    key="log_prob",
    total: int | None = None,
):
    """A site's ``key`` tensor reduced to ``(B,)`` (or ``(P, B)``); see the module doc. A
    site outside the data plate (a global site) gives each example ``1 / total`` of it
    (``total``: the examples of the set the batch is drawn from; the batch by default)."""
    value = site[key]
    if not torch.is_tensor(value) or value.dim() == 0:
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    full = value.dim()
    keep: list[int] = []
    particle_axis = None
    data_axis = None
    for frame in site["cond_indep_stack"]:
        if frame.dim is None or full + frame.dim < 0:
            continue
        axis = full + frame.dim
        if frame.name == PARTICLES:
            particle_axis = axis
        elif value.shape[axis] == batch and (data_axis is None or frame.name == "data"):
            data_axis = axis
    keep = [a for a in (particle_axis, data_axis) if a is not None]
    other = [a for a in range(full) if a not in keep]
    reduced = value.sum(other) if other else value
    if particle_axis is not None and data_axis is not None and particle_axis > data_axis:
        reduced = reduced.transpose(0, 1)
    if data_axis is None:  # a global site: shared equally by the set
        reduced = (reduced / (total or batch)).unsqueeze(-1).expand(*reduced.shape, batch)
    if particles is not None and particle_axis is None:
        reduced = reduced.expand(particles, batch)
    return reduced


def _is_one(scale: Any) -> bool:
    return isinstance(scale, int | float) and scale == 1


def unscaled(site: dict[str, Any]) -> dict[str, Any]:
    """The site with its ``log_prob`` in nats of the unscaled model: masked as the program
    masks it, without its ``poutine.scale`` (a program's own scale factor, a subsampled
    plate's ``N / B``). The site itself where its scale is 1."""
    if _is_one(site["scale"]) or "unscaled_log_prob" not in site:
        return site
    return dict(site, log_prob=scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"]))


def set_size(model_tr, batch: int, total: int | None) -> int:
    """The examples the batch's global sites are shared by: the full size of a data plate
    the program subsamples itself (``pyro.plate("data", N, subsample=idx)``), else
    ``total`` (the evaluated set), else the batch."""
    for site in model_tr.nodes.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.name == "data" and frame.size > batch:
                return max(frame.size, total or 0)
    return total or batch


def terms(
    pair: Programs, args: tuple, particles: int | None = None, total: int | None = None
) -> dict[str, torch.Tensor]:
    """Per-example ``log_lik``, ``log_prior`` and ``log_q`` (each ``(B,)`` or ``(P, B)``),
    in nats of the unscaled model, and, per latent site of this trace, ``kl/<site>``: the
    analytic KL of guide against model where its closed form is valid in this trace
    (:func:`~ppl_vae.programs.analytic_sites`: ``kl_divergence`` knows the pair, the guide
    samples the latent sites in the model's order, scales and masks agree); else ``log q -
    log p`` of that draw. ``elbo_scaled`` is the per-example ELBO in the program's own
    units: every term carrying its site's scale (``poutine.scale``), analytic KLs too. A
    global site gives each example ``1 / total`` of its terms (``total``: the size of the
    set the batch comes from, the batch by default), as Pyro scales a subsampled plate."""
    model_tr, guide_tr = trace_pair(pair, args, particles)
    return terms_of(pair, model_tr, guide_tr, args, particles, total)


def terms_of(
    pair: Programs,
    model_tr,
    guide_tr,
    args: tuple,
    particles: int | None = None,
    total: int | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`terms` read off the traces of :func:`trace_pair` for ``args``: the sites are
    those of these traces (they may come and go with the batch)."""
    batch = args[0].shape[0]
    total = set_size(model_tr, batch, total)
    shape = (batch,) if particles is None else (particles, batch)
    x = args[0]
    zero = x.new_zeros(shape, dtype=x.dtype if x.is_floating_point() else None)
    out = {"log_lik": zero, "log_prior": zero, "log_q": zero}
    scaled = zero

    def reduce(site, key="log_prob"):
        return per_example(site, batch, particles, key, total)

    for site in model_tr.nodes.values():  # observed sites may differ between train and eval
        if site["type"] == "sample" and site["is_observed"]:
            out["log_lik"] = out["log_lik"] + reduce(unscaled(site))
            scaled = scaled + reduce(site)
    latent = latent_names(guide_tr)
    analytic = analytic_sites(model_tr, guide_tr, latent) if particles is None else ()
    for name in latent:
        p_site, q_site = model_tr.nodes[name], guide_tr.nodes[name]
        log_p, log_q = reduce(unscaled(p_site)), reduce(unscaled(q_site))
        out["log_prior"] = out["log_prior"] + log_p
        out["log_q"] = out["log_q"] + log_q
        out[f"kl/{name}"] = log_q - log_p
        out[f"kl_dims/{name}"] = None
        kl_scaled = reduce(q_site) - reduce(p_site)
        if name in analytic:
            kl, out[f"kl_dims/{name}"] = _analytic_kl(
                dict(q_site, scale=1.0), p_site, batch, total, log_q - log_p
            )
            out[f"kl/{name}"] = kl
            if _is_one(q_site["scale"]):
                kl_scaled = kl
            else:
                kl_scaled = _analytic_kl(q_site, p_site, batch, total, kl_scaled)[0]
        scaled = scaled - kl_scaled
    out["elbo_scaled"] = scaled
    return out


def _analytic_kl(q_site, p_site, batch: int, total: int, fallback: torch.Tensor):
    """KL per example and per latent dimension from ``kl_divergence`` (on the base
    distributions for the per-dimension split), with the site's scale and mask as its
    ``log_prob`` carries them; the fallback where the closed form does not come out.
    Only for the sites whose closed form is valid (:func:`~ppl_vae.programs.analytic_sites`)."""
    q, p = q_site["fn"], p_site["fn"]
    scale, mask = q_site["scale"], q_site["mask"]
    try:
        q_base = getattr(q, "base_dist", None)
        p_base = getattr(p, "base_dist", None)
        if q_base is None or p_base is None or q.reinterpreted_batch_ndims != 1:
            raise NotImplementedError
        per_dim = kl_divergence(q_base, p_base)  # (B, d)
        if per_dim.dim() != 2 or per_dim.shape[0] != batch:
            raise NotImplementedError
        if torch.is_tensor(mask) and mask.dim() > 0:
            mask = mask.unsqueeze(-1)
        per_dim = scale_and_mask(per_dim, scale, mask)
        return per_dim.sum(-1), per_dim
    except (NotImplementedError, AttributeError, RuntimeError):
        pass
    try:
        kl = closed_form_kl(q_site, p_site)
    except RuntimeError:
        kl = None
    if kl is None:
        return fallback, None
    return per_example(dict(q_site, kl=kl), batch, key="kl", total=total), None


def _distribution_mean(site: dict[str, Any]) -> torch.Tensor | None:
    """The mean of a site's distribution, None where it has none (or a non-finite one)."""
    try:
        mean = site["fn"].mean
        if mean.shape == site["value"].shape and all_finite(mean):
            return mean
    except (NotImplementedError, AttributeError):
        pass
    return None


def _site_mean(site: dict[str, Any]) -> torch.Tensor:
    mean = _distribution_mean(site)
    return site["value"] if mean is None else mean


@torch.no_grad()
def guide_means(pair: Programs, args: tuple) -> dict[str, torch.Tensor]:
    """Each latent site's guide mean (its draw where the distribution has no mean), for
    the sites of this trace (global ones too)."""
    return _means_and_subsamples(pair, args)[0]


def _means_and_subsamples(pair: Programs, args: tuple) -> tuple[dict, dict]:
    """:func:`guide_means` and the plates' subsample indices of the same guide trace."""
    with pair.scope():
        tr = poutine.trace(pair.guide).get_trace(*args)
    return {n: _site_mean(tr.nodes[n]) for n in latent_names(tr)}, subsamples(tr)


def subsamples(guide_tr) -> dict[str, torch.Tensor]:
    """The subsample indices of the plates a guide trace subsampled itself (Pyro's LDA:
    ``pyro.plate("documents", N, batch_size)``), by plate name: a model run at the
    guide's values must take the same documents."""
    return {n: s["value"] for n, s in guide_tr.nodes.items() if site_is_subsample(s)}


def _local(pair: Programs, means: dict[str, torch.Tensor], batch: int):
    """The means of the local sites among ``means`` (the codes; a global site's value is
    no example's code)."""
    out = {}
    for name, value in means.items():
        if name in pair.latent_sites or (
            name not in pair.global_sites and value.dim() > 0 and value.shape[0] == batch
        ):
            out[name] = value
    return out


def flatten_codes(pair: Programs, values: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
    """Local latent site values as one ``(B, latent_dim)`` matrix, sites in guide order.
    Codes need the pair's local sites (:attr:`Programs.latent_sites`): a batch whose
    trace has other sites (one per time step) has no code of that width."""
    if tuple(values) != tuple(pair.latent_sites) and set(values) != set(pair.latent_sites):
        raise UserError(
            f"{pair.name}'s latent sites vary with the batch ({', '.join(values) or 'none'} "
            f"here, {', '.join(pair.latent_sites) or 'none'} in its first trace), so its "
            "codes have no fixed width"
        )
    if not pair.latent_sites:
        return next(iter(values.values()), torch.zeros(batch)).new_zeros(batch, 0)
    return torch.cat([values[n].reshape(batch, -1) for n in pair.latent_sites], -1)


def codes(pair: Programs, args: tuple) -> torch.Tensor:
    """The guide's codes ``E_q[z|x]``, ``(B, latent_dim)``."""
    batch = args[0].shape[0]
    return flatten_codes(pair, _local(pair, guide_means(pair, args), batch), batch)


def split_codes(pair: Programs, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten_codes` for codes of shape ``(N, latent_dim)``."""
    out, start = {}, 0
    for name, size in zip(pair.latent_sites, pair.latent_sizes):
        out[name] = z[:, start : start + size]
        start += size
    return out


def _observed_mean(pair: Programs, model, args: tuple) -> torch.Tensor:
    with pair.scope():
        tr = poutine.trace(model).get_trace(*args)
    return _observed_mean_of(pair, tr, args[0].shape[0])


def _observed_mean_of(pair: Programs, model_tr, batch: int) -> torch.Tensor:
    """The means of the model's data sites in a trace, as ``(B, x_dim)``."""
    return torch.cat(
        [_site_mean(model_tr.nodes[n]).reshape(batch, -1) for n in pair.data_sites], -1
    )


@torch.no_grad()
def reconstruct(pair: Programs, args: tuple) -> torch.Tensor:
    """The mean of :math:`p(x \\mid z)` at the guide's codes of ``x``."""
    means, subs = _means_and_subsamples(pair, args)
    return _reconstruct_at(pair, means, args, subs)


def _reconstruct_at(
    pair: Programs, means: dict[str, torch.Tensor], args: tuple, subs: dict | None = None
) -> torch.Tensor:
    """The model's data means at the latent values ``means`` (and the guide's subsample
    indices ``subs``, so a program subsampling its own plate scores the same rows)."""
    return _observed_mean(pair, poutine.condition(pair.model, data={**(subs or {}), **means}), args)


def _draw_free_means(pair: Programs, guide_tr) -> dict[str, torch.Tensor] | None:
    """The guide means of a trace when no random draw can have moved them: every latent
    site has a mean and every site before the last is a point mass (its draw is its
    mean), so each mean is a function of the batch and the parameters alone -- the same
    numbers another run of the guide gives. None otherwise (a hierarchical guide, whose
    later means depend on earlier draws; a site without a mean, whose code is a draw)."""
    order = latent_names(guide_tr)
    means = {n: _distribution_mean(guide_tr.nodes[n]) for n in order}
    if any(m is None for m in means.values()):
        return None
    if not all(torch.equal(means[n], guide_tr.nodes[n]["value"]) for n in order[:-1]):
        return None
    return means


def _codes_or_none(pair: Programs, means: dict[str, torch.Tensor], batch: int):
    """The codes of ``means`` (local sites only), None where this trace's local sites are
    not the pair's (sites that vary with the batch)."""
    try:
        return flatten_codes(pair, _local(pair, means, batch), batch)
    except UserError:
        return None


@torch.no_grad()
def measure(
    pair: Programs, args: tuple, total: int | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """:func:`terms`, :func:`codes` and :func:`reconstruct` of one batch, as the three give
    them run in turn, from fewer runs of the programs where the traces allow it. The codes
    are read off the terms' guide trace when its means are draw-free
    (:func:`_draw_free_means`); the reconstruction is then the model run at them, or,
    where every draw is its mean (a point-mass guide), the terms' own model trace, which
    ran the model at the codes already. Three runs (guide, model, model) or two, against
    five; otherwise the five, in the same order, so the random streams are the same. The
    codes are None where this batch's local sites are not the pair's (they vary with the
    batch), and so is the reconstruction where this batch lacks some of the pair's data
    sites; ``total`` is :func:`terms`'."""
    model_tr, guide_tr = trace_pair(pair, args)
    out = terms_of(pair, model_tr, guide_tr, args, total=total)
    means = _draw_free_means(pair, guide_tr)
    batch = args[0].shape[0]
    if not all(n in model_tr.nodes for n in pair.data_sites):  # sites vary with the batch:
        return out, None, None  # no codes, no reconstruction of x in the pair's layout
    if means is None:
        code = _codes_or_none(pair, guide_means(pair, args), batch)
        return out, code, reconstruct(pair, args)
    if all(torch.equal(m, guide_tr.nodes[n]["value"]) for n, m in means.items()):
        recon = _observed_mean_of(pair, model_tr, batch)
    else:
        recon = _reconstruct_at(pair, means, args, subsamples(guide_tr))
    return out, _codes_or_none(pair, means, batch), recon


@torch.no_grad()
def decode(pair: Programs, z: torch.Tensor, like: tuple) -> torch.Tensor:
    """The mean of :math:`p(x \\mid z)` for codes ``z`` ``(N, latent_dim)``; ``like`` is a
    batch of N examples whose values are ignored (it gives the programs their shapes)."""
    model = poutine.condition(pair.model, data=split_codes(pair, z))
    return _observed_mean(pair, model, like)


class _UnconditionSites(poutine.messenger.Messenger):
    """``poutine.uncondition`` for the named sites only: the others stay observed."""

    def __init__(self, sites: tuple[str, ...]):
        super().__init__()
        self.sites = set(sites)

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["is_observed"] and msg["name"] in self.sites:
            msg["is_observed"] = False
            msg["infer"]["obs"] = msg["value"]
            msg["infer"]["was_observed"] = True
            msg["value"] = None
            msg["done"] = False


@torch.no_grad()
def generate(pair: Programs, like: tuple) -> torch.Tensor:
    """Means of :math:`p(x \\mid z)` at ``z ~ p(z)``: the model run with its data sites
    unconditioned, on a placeholder batch ``like``; a label the model observes
    (``pyro.sample("y", ..., obs=ys)``, Pyro's SSVAE) keeps the value ``like`` gives it."""
    return _observed_mean(pair, _UnconditionSites(pair.data_sites)(pair.model), like)


class _Unscaled(poutine.messenger.Messenger):
    """Every site at scale 1: the unscaled model (outermost, so after the program's own
    ``poutine.scale`` and a subsampled plate's ``N / B``)."""

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample":
            msg["scale"] = 1.0


def _data_symbol(model_tr, batch: int) -> str | None:
    """The packed dimension symbol of the data plate in an enumerated trace."""
    for site in model_tr.nodes.values():
        if site["type"] != "sample" or "packed" not in site:
            continue
        shape = site["fn"].batch_shape
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None and len(shape) >= -frame.dim:
                if shape[frame.dim] == batch and frame.name in model_tr.plate_to_symbol:
                    return model_tr.plate_to_symbol[frame.name]
    return None


def _weighted(cost, weight: torch.Tensor, share: torch.Tensor, symbol: str | None):
    """A packed cost times the per-example weight along its data-plate dimension (times the
    per-example share where the cost has none: a global cost)."""
    if not torch.is_tensor(cost):
        return cost * share
    dims = cost._pyro_dims
    if symbol is not None and symbol in dims:
        shape = [1] * len(dims)
        shape[dims.index(symbol)] = weight.shape[0]
        out = cost * weight.reshape(shape)
    else:
        out = cost * share
    out._pyro_dims = dims
    return out


def enum_elbo(
    pair: Programs,
    args: tuple,
    total: int | None = None,
    scaled: bool = False,
    observed_only: bool = False,
) -> torch.Tensor:
    """The per-example ELBO ``(B,)`` of a pair with enumerated sites (``config_enumerate``
    in the guide or the model), from ``TraceEnum_ELBO``'s own machinery: its enumerated
    traces (``_get_traces``), its marginalisation of the model's enumerated sites
    (``_compute_model_factors``, ``contract_tensor_tree``) and its ``Dice`` expectation,
    which is linear in the costs; each cost is weighted by a vector of ones over the data
    plate (a global cost by its ``1 / total`` share) and the expectation's gradient in
    that vector is the ELBO of each example. In nats of the unscaled model, or with
    ``scaled`` in the program's own units. ``observed_only`` (for a model that enumerates
    nothing itself) gives the expected log-likelihood :math:`\\mathbb{E}_q \\log p(x|z)`
    instead, the guide's enumerated sites summed out alike."""
    return enum_terms(pair, args, total, scaled, (observed_only,))[0]


def enum_terms(
    pair: Programs,
    args: tuple,
    total: int | None = None,
    scaled: bool = False,
    parts: tuple[bool, ...] = (False, True),
) -> list[torch.Tensor]:
    """:func:`enum_elbo` for each ``observed_only`` in ``parts``, from the same traces (one
    run of the programs): by default the ELBO and the expected log-likelihood."""
    from pyro.infer import TraceEnum_ELBO

    model, guide = pair.model, pair.guide
    if not scaled:
        model, guide = _Unscaled()(model), _Unscaled()(guide)
    elbo = TraceEnum_ELBO(
        max_plate_nesting=pair.max_plate_nesting, strict_enumeration_warning=False
    )
    batch = args[0].shape[0]
    total = total or batch
    zero = args[0].new_zeros(batch, dtype=torch.get_default_dtype())
    out = [zero for _ in parts]
    with pair.scope():
        for model_tr, guide_tr in elbo._get_traces(model, guide, args, {}):
            with torch.enable_grad():  # the programs ran without: only the weights need it
                out = [
                    o + _per_example(model_tr, guide_tr, pair, zero, total, part)
                    for o, part in zip(out, parts)
                ]
    return out


def _per_example(model_tr, guide_tr, pair, like: torch.Tensor, total: int, observed_only: bool):
    """:func:`enum_elbo` of one pair of enumerated traces (``like``: a ``(B,)`` tensor of
    the result's dtype and device)."""
    from opt_einsum import shared_intermediates
    from pyro.infer.traceenum_elbo import _compute_model_factors
    from pyro.infer.util import Dice
    from pyro.ops import packed
    from pyro.ops.contract import contract_tensor_tree
    from pyro.ops.rings import SampleRing

    batch = like.shape[0]
    ones = like.new_ones(batch).requires_grad_()
    symbol = _data_symbol(model_tr, batch)
    # a global cost: 1 / total of it to each example. Packing drops a plate of size
    # 1, so in a batch of one only the pair's global sites make a cost global.
    one_local = batch == 1 and not pair.global_sites
    share = ones.sum() / (1 if one_local else total)

    # _compute_dice_elbo's costs, each weighted per example
    costs, log_factors, ordering, sum_dims, scale = _compute_model_factors(model_tr, guide_tr)
    if observed_only:
        costs, log_factors = {}, {}
        for name, site in model_tr.nodes.items():
            if site["type"] == "sample" and site["is_observed"]:
                costs.setdefault(ordering[name], []).append(site["packed"]["log_prob"])
    if log_factors:
        dim_to_size = {}
        for terms_t in log_factors.values():
            for term in terms_t:
                dim_to_size.update(zip(term._pyro_dims, term.shape))
        with shared_intermediates() as cache:
            ring = SampleRing(cache=cache, dim_to_size=dim_to_size)
            log_factors = contract_tensor_tree(log_factors, sum_dims, ring=ring)
        for t, log_factors_t in log_factors.items():
            for term in log_factors_t:
                costs.setdefault(t, []).append(packed.scale_and_mask(term, scale=scale))
    for name, site in guide_tr.nodes.items():
        if site["type"] == "sample" and not observed_only:
            cost = packed.neg(site["packed"]["log_prob"])
            costs.setdefault(ordering[name], []).append(cost)
    costs = {
        t: [_weighted(c, ones, share, symbol) for c in terms_t] for t, terms_t in costs.items()
    }
    expected = Dice(guide_tr, ordering).compute_expectation(costs)
    if torch.is_tensor(expected) and expected.requires_grad:
        return torch.autograd.grad(expected, ones)[0].detach()
    return like.new_zeros(batch)
