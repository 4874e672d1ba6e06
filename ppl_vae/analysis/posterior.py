"""Posterior analysis of a trained program pair: guide draws, PSIS k-hat, NUTS references.

Three questions about the amortised guide :math:`q_\\phi(z|x)`, asked per test point, for
any Pyro model/guide pair (:class:`~ppl_vae.programs.Programs`) with one or more latent
sites, everything read off the programs' traces:

1. **What does it say?** Draws of every latent site from the guide (group ``posterior``:
   the guide traced under an outer particle plate, :func:`ppl_vae.traces.trace_pair`) and
   from the prior (group ``prior``: the model under ``poutine.uncondition``, so a
   hierarchical prior :math:`p(z_1) p(z_2|z_1)` is drawn ancestrally and a conditional
   prior :math:`p(z|y)` per point), in one ArviZ ``InferenceData`` (``az.from_dict``)
   with one variable per latent site, dims ``(chain, draw, point, <site>_dim)``;
   summarised by ``az.summary``. Programs that do not run under a particle plate are
   traced once per draw instead.
2. **Is it a usable proposal?** The Pareto :math:`\\hat k` of the importance ratios
   :math:`\\log w_s = \\log p(x, z_s) - \\log q(z_s|x)` over :math:`S` guide draws
   (:func:`ppl_vae.measure.importance.log_weights`, then ``az.psislw``; Yao et al. 2018):
   :math:`\\hat k < 0.5` good, :math:`0.5`–:math:`0.7` usable, :math:`> 0.7` unreliable.
   The same weights give the per-point gap :math:`\\log \\hat p(x) -
   \\widehat{\\mathrm{ELBO}}(x) \\approx \\mathrm{KL}(q(z|x) \\,\\|\\, p(z|x))`.
3. **How far is it from the true posterior?** NUTS on :math:`p(z|x)` for one point at a
   time, parameters fixed, several chains (:mod:`ppl_vae.analysis.reference`); the guide's
   moments against the NUTS draws' over all latent sites concatenated, beside the PSIS gap.

Figures are ArviZ's own (``az.plot_khat``, ``az.plot_density`` of guide against NUTS,
``az.plot_pair``), drawn on ``matplotlib.figure.Figure`` objects made here: no pyplot
state, no backend switch.

Example::

    >>> import torch
    >>> from ppl_vae.models.ppca import PPCA
    >>> from ppl_vae.programs import from_object
    >>> x = torch.randn(3, 5)
    >>> pair = from_object(PPCA(x_dim=5, latent_dim=2), x)
    >>> idata = inference_data(pair, (x,), [0, 1, 2], draws=50)
    >>> dict(idata.posterior["z"].sizes)
    {'chain': 1, 'draw': 50, 'point': 3, 'z_dim': 2}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import arviz as az
import numpy as np
import torch
import xarray as xr
from pyro import poutine

from ppl_vae import traces
from ppl_vae.analysis import reference
from ppl_vae.analysis.reference import dim_name
from ppl_vae.errors import UserError, first_line
from ppl_vae.measure.importance import check_estimable, default_chunk, log_weights
from ppl_vae.measure.metrics import eval_mode, seeded
from ppl_vae.programs import Programs, is_local, latent_names

KHAT_GOOD, KHAT_BAD = 0.5, 0.7


#: Latent values shown at most in ``density.png`` and ``pair.png``.
MAX_DENSITY_PANELS, MAX_PAIR_DIMS = 12, 4


GUIDE_LABEL, NUTS_LABEL = "guide q(z|x)", "NUTS"


def choose_points(n_total: int, n: int, seed: int = 0) -> list[int]:
    """``n`` distinct example indices out of ``n_total``, sorted, chosen by ``seed``."""
    if not 1 <= n <= n_total:
        raise UserError(f"--points must lie in 1..{n_total} (the size of the split), got {n}")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


# -- draws from traces ----------------------------------------------------------------------
def site_values(site: dict[str, Any], batch: int, particles: int | None) -> torch.Tensor:
    """A traced site's value as ``(P, B, k)``: the particle plate's axis first (a single
    draw when ``particles`` is None), the data plate's next, everything else flattened.
    A site outside the data plate (a global latent) is repeated for every example."""
    value = site["value"]
    batch_ndim = value.dim() - len(site["fn"].event_shape)
    particle_axis = data_axis = None
    for frame in site["cond_indep_stack"]:
        if frame.dim is None or batch_ndim + frame.dim < 0:
            continue
        axis = batch_ndim + frame.dim
        if frame.name == traces.PARTICLES:
            particle_axis = axis
        elif value.shape[axis] == batch and (data_axis is None or frame.name == "data"):
            data_axis = axis
    if particle_axis is None:
        value, particle_axis = value.unsqueeze(0), 0
        data_axis = None if data_axis is None else data_axis + 1
    if data_axis is None:
        value = value.unsqueeze(particle_axis + 1)
        data_axis = particle_axis + 1
        value = value.expand(*value.shape[:data_axis], batch, *value.shape[data_axis + 1 :])
    rest = [a for a in range(value.dim()) if a not in (particle_axis, data_axis)]
    value = value.permute(particle_axis, data_axis, *rest)
    return value.reshape(value.shape[0], batch, -1)


def local_sites(pair: Programs, guide_tr, batch: int) -> list[str]:
    """The local latent sites of this guide trace, in guide order: its own names (a
    sequence program's ``z_1..z_T`` go with the batch's longest length), not the first
    trace's."""
    return [
        n
        for n in latent_names(guide_tr)
        if n not in pair.global_sites and is_local(guide_tr.nodes[n], batch)
    ]


def draw_sites(
    pair: Programs,
    trace_fn: Callable[[int | None], poutine.Trace],
    batch: int,
    draws: int,
    key: str = "guide",
    sites: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``draws`` values ``(S, B, k)`` of the latent sites ``sites`` (by default the local
    latent sites of the guide trace ``trace_fn`` gives, :func:`local_sites`) from
    ``trace_fn(particles)`` (``key`` names the program run, for
    :meth:`~ppl_vae.programs.Programs.vectorized`): vectorised in chunks of particles where
    the programs allow it (as :func:`ppl_vae.measure.importance.log_weights` decides), one
    trace per draw otherwise."""
    chunks: list[dict[str, torch.Tensor]] = []
    names = list(sites) if sites is not None else None

    def read(tr, particles):
        nonlocal names
        if names is None:
            names = local_sites(pair, tr, batch)
        return {n: site_values(tr.nodes[n], batch, particles) for n in names}

    def fast() -> list[dict[str, torch.Tensor]]:
        chunk = default_chunk(draws, batch)
        return [
            read(trace_fn(p), p) for p in (min(chunk, draws - k) for k in range(0, draws, chunk))
        ]

    def slow() -> list[dict[str, torch.Tensor]]:
        return [read(trace_fn(None), None) for _ in range(draws)]

    chunks = pair.vectorized(f"draws/{key}", fast, slow)
    return {n: torch.cat([c[n] for c in chunks]) for n in chunks[0]}


def guide_trace_fn(pair: Programs, args: tuple) -> Callable[[int | None], poutine.Trace]:
    """Guide traces for :func:`draw_sites` (the model replayed on them checks the sites)."""
    return lambda particles: traces.trace_pair(pair, args, particles)[1]


def prior_trace_fn(pair: Programs, args: tuple) -> Callable[[int | None], poutine.Trace]:
    """Traces of the model run unconditioned (generation): ancestral draws from the prior."""

    def trace(particles):
        model = poutine.uncondition(pair.model)
        if particles is not None:
            dim = -(pair.max_plate_nesting + 1)
            model = traces.in_particle_plate(model, particles, dim)
        with pair.scope():
            return poutine.trace(model).get_trace(*args)

    return trace


def _coords(values: dict[str, torch.Tensor], points: Sequence[int]) -> tuple[dict, dict]:
    """ArviZ coordinates and dimensions of draws ``(S, B, k)`` per site."""
    coords: dict[str, Any] = {"point": list(points)}
    dims: dict[str, list[str]] = {}
    for name, v in values.items():
        coords[dim_name(name)] = list(range(v.shape[-1]))
        dims[name] = ["point", dim_name(name)]
    return coords, dims


def _chain(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``(S, B, k)`` tensors as ``(1, S, B, k)`` arrays: one chain."""
    return {n: v.unsqueeze(0).detach().cpu().numpy() for n, v in values.items()}


@torch.no_grad()
def inference_data(
    pair: Programs,
    args: tuple,
    points: Sequence[int],
    draws: int = 1000,
    seed: int = 0,
) -> az.InferenceData:
    """Guide draws (``posterior``) and prior draws (``prior``, independent per point) of
    every latent site, dims ``(chain, draw, point, <site>_dim)``, plus the observed
    sites' values (``observed_data``, dims ``(point, <site>_dim)``). ``args`` are the
    programs' arguments for the points (``pair.eval_args(x, y)``)."""
    batch = args[0].shape[0]
    with eval_mode(pair), seeded(seed, args[0].device):
        q = draw_sites(pair, guide_trace_fn(pair, args), batch, draws, "guide")
        p = draw_sites(pair, prior_trace_fn(pair, args), batch, draws, "prior", list(q))
        model_tr, _ = traces.trace_pair(pair, args)
    coords, dims = _coords(q, points)
    observed = {}
    for name in pair.observed_sites:  # as recorded in training mode; eval mode may skip some
        if name not in model_tr.nodes:
            continue
        observed[name] = model_tr.nodes[name]["value"].reshape(batch, -1).cpu().numpy()
        coords[dim_name(name)] = list(range(observed[name].shape[1]))
        dims[name] = ["point", dim_name(name)]
    return az.from_dict(
        posterior=_chain(q), prior=_chain(p), observed_data=observed, coords=coords, dims=dims
    )


@torch.no_grad()
def psis(
    pair: Programs, args: tuple, draws: int = 1000, seed: int = 0, points: Sequence[int] = ()
) -> dict[str, Any]:
    """Per point: Pareto ``khat`` of the guide's importance ratios (an ``xarray``
    DataArray over ``point``), the MC ``elbo``, the IW ``log_p`` from the same ``draws``
    and their difference ``gap`` (numpy, ``(B,)``)."""
    if draws < 20:
        raise UserError(f"--draws must be at least 20 for a Pareto fit, got {draws}")
    check_estimable(pair)
    batch = args[0].shape[0]
    chunk = default_chunk(draws, batch)
    with eval_mode(pair), seeded(seed, args[0].device):
        lw = torch.cat(
            [log_weights(pair, args, min(chunk, draws - k)) for k in range(0, draws, chunk)]
        )
    lw = lw.T.double().cpu().numpy()  # (B, S)
    points = list(points) or list(range(batch))
    lw_da = xr.DataArray(lw, dims=("point", "__sample__"), coords={"point": points})
    _, khat = az.psislw(lw_da)
    log_p = torch.from_numpy(lw).logsumexp(-1).numpy() - math.log(draws)
    elbo = lw.mean(-1)
    return {"khat": khat, "elbo": elbo, "log_p": log_p, "gap": log_p - elbo}


# -- figures --------------------------------------------------------------------------------
def _first_values(ds: xr.Dataset, sites: Sequence[str], n: int) -> xr.Dataset:
    """The first ``n`` latent values over the sites in order (whole sites first)."""
    keep = {}
    for name in sites:
        if n <= 0:
            break
        size = ds[name].sizes[dim_name(name)]
        keep[name] = ds[name].isel({dim_name(name): slice(0, min(size, n))})
        n -= size
    return xr.Dataset(keep)


def figures(
    khat: xr.DataArray | None,
    guide: az.InferenceData,
    nuts: az.InferenceData | None = None,
    sites: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``matplotlib.figure.Figure`` objects by file name: ``khat.png`` (``az.plot_khat``)
    and, for the first NUTS point, ``density.png`` (``az.plot_density``, guide against
    NUTS, one panel per latent value) and ``pair.png`` (``az.plot_pair`` of both, when
    there are two or more latent values). No pyplot: the figures are not registered
    anywhere and need no closing."""
    from matplotlib.figure import Figure

    sites = list(sites or guide.posterior.data_vars)
    out: dict[str, Any] = {}
    if khat is not None:  # None: no k-hat (a program with global latent sites)
        fig = Figure(figsize=(6, 3), layout="constrained")
        ax = fig.subplots()
        elpd = az.ELPDData(data=[khat, KHAT_BAD], index=["pareto_k", "good_k"])
        az.plot_khat(
            elpd,
            ax=ax,
            show_hlines=True,
            hlines_kwargs={"hlines": [KHAT_GOOD, KHAT_BAD], "linestyle": ["--", ":"]},
            show=False,
        )
        ax.set(xlabel="test point (order of analysis)", title="PSIS k-hat of the guide")
        out["khat.png"] = fig
    if nuts is None or not nuts.posterior.sizes.get("point"):
        return out
    point = nuts.posterior["point"].values[0]
    q = guide.posterior.sel(point=point)
    n = nuts.posterior.sel(point=point)
    total = sum(q[s].sizes[dim_name(s)] for s in sites)
    out["density.png"] = _density_figure(q, n, sites, min(total, MAX_DENSITY_PANELS), point)
    if total >= 2:
        out["pair.png"] = _pair_figure(q, n, sites, min(total, MAX_PAIR_DIMS), point)
    return out


def _density_figure(q: xr.Dataset, n: xr.Dataset, sites: list[str], shown: int, point: Any):
    """``az.plot_density`` of the guide's and NUTS's draws, one panel per latent value."""
    from matplotlib.figure import Figure

    cols = min(shown, 4)
    rows = math.ceil(shown / cols)
    fig = Figure(figsize=(3 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for extra in axes[shown:]:
        fig.delaxes(extra)
    az.plot_density(
        [_first_values(q, sites, shown), _first_values(n, sites, shown)],
        data_labels=[GUIDE_LABEL, NUTS_LABEL],
        ax=axes[:shown],
        hdi_prob=1,
        shade=0.1,
        show=False,
    )
    fig.suptitle(f"posterior of point {point}: guide against NUTS")
    return fig


def _pair_figure(q: xr.Dataset, n: xr.Dataset, sites: list[str], d: int, point: Any):
    """``az.plot_pair`` of the first ``d`` latent values, the guide's draws over NUTS's."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.2 * d, 2.2 * d), layout="constrained")
    axes = fig.subplots(d - 1, d - 1, squeeze=False)
    for data, label, color in ((q, GUIDE_LABEL, "C0"), (n, NUTS_LABEL, "C1")):
        az.plot_pair(
            _first_values(data, sites, d),
            ax=axes if d > 2 else axes[0, 0],
            scatter_kwargs={"label": label, "alpha": 0.3, "color": color},
            show=False,
        )
    axes[0, 0].legend(fontsize=7, markerscale=3)
    fig.suptitle(f"point {point}: guide against NUTS")
    return fig


# -- the amortisation gap -------------------------------------------------------------------
def amortization_record(pair: Programs, args: tuple, seed: int = 0) -> dict[str, Any]:
    """:func:`ppl_vae.measure.amortization.amortization_gap` of the points in ``args``
    (encoder ELBO, best per-point ELBO, log p(x) under the optimised guide, the
    approximation and amortisation gaps, each with ``_se``), or ``{"note": why}`` for a
    program whose guide has no per-point family here (a site neither Normal nor Delta)."""
    from ppl_vae.measure.amortization import amortization_gap

    x, y = args[0], (args[1] if len(args) > 1 else None)
    try:
        return amortization_gap(pair, x, y, seed=seed)
    except UserError as exc:
        return {"points": int(x.shape[0]), "note": str(exc)}
    except (RuntimeError, ValueError, IndexError, NotImplementedError) as exc:
        # analysis degrades, never dies: a program whose sites do not take a batch of
        # particles (a mask of x's shape, BatchNorm over the batch) gets a note instead
        first = first_line(exc)
        return {
            "points": int(x.shape[0]),
            "note": f"the amortisation gap could not be "
            f"estimated for this program ({type(exc).__name__}: {first})",
        }


# -- the whole analysis ---------------------------------------------------------------------
@dataclasses.dataclass
class Analysis:
    """What :func:`analyze` found, in memory: the report (``report.json``), the guide and
    prior draws (``posterior.nc``), the NUTS references (``nuts.nc``; None without any) and
    the figures by file name. :func:`ppl_vae.runs.analyze.write_analysis` writes them."""

    report: dict[str, Any]
    posterior: az.InferenceData
    nuts: az.InferenceData | None
    figures: dict[str, Any]


def analyze(
    pair: Programs,
    x_all: torch.Tensor,
    y_all: torch.Tensor | None = None,
    *,
    points: int = 50,
    draws: int = 1000,
    nuts_points: int = 3,
    chains: int = 2,
    seed: int = 0,
    nuts_samples: int = 500,
    nuts_warmup: int = 300,
    amortization_points: int = 10,
    step: int | None = None,
) -> Analysis:
    """The whole analysis of ``points`` examples of ``x_all`` (labels ``y_all`` passed where
    the programs take them), nothing written. The report's ``amortization`` holds the
    approximation and amortisation gaps of the first ``amortization_points`` of them (all,
    when fewer; :func:`amortization_record`); ``step``, the training step of the checkpoint
    analysed (``ppl-vae analyze`` passes it), goes first in the report when given."""
    _check_options(points, nuts_points, chains, amortization_points)
    _check_local_sites(pair)
    idx = choose_points(x_all.shape[0], points, seed)
    y = y_all[idx] if y_all is not None else None
    args = pair.eval_args(x_all[idx], y)
    diag, note = _psis_or_note(pair, args, draws, seed, idx)  # validates pair and --draws
    idata = inference_data(pair, args, idx, draws, seed)
    report = _report(idata, idx, draws, diag, step)
    if note:
        report["psis_note"] = note
    nuts_options = {"samples": nuts_samples, "warmup": nuts_warmup, "chains": chains}
    rows = (x_all[idx], y)
    nuts = _nuts_references(
        pair,
        _point_args(pair, args, rows),
        idx,
        idata,
        diag,
        report,
        nuts_points,
        nuts_options,
        seed,
    )
    report["nuts_settings"] = nuts_options
    if amortization_points:
        k = min(amortization_points, len(idx))
        if pair.binder is not None:  # bound by name: the points' rows, bound again there
            first = (x_all[idx][:k], None if y is None else y[:k])
        else:  # (slicing bound arguments fails on a constant: AIR's batch_size)
            first = tuple(a[:k] for a in args)
        report["amortization"] = amortization_record(pair, first, seed)
    drawn = nuts if nuts is not None else idata
    figs = figures(
        None if diag is None else diag["khat"], idata, nuts, list(drawn.posterior.data_vars)
    )
    report["figures"] = list(figs)
    return Analysis(report, idata, nuts, figs)


def _check_local_sites(pair: Programs) -> None:
    """The per-point analysis needs a latent site with one value per example."""
    if not pair.latent_sites:  # LDA as Pyro writes it: topics global, its own plate inside
        raise UserError(
            f"{pair.name} has no latent site with one value per example (its latent sites "
            f"{', '.join(pair.global_sites)} are global to the batch), so the per-point "
            "posterior analysis (guide draws, PSIS, NUTS, amortisation gap) is not defined; "
            "ppl-vae evaluate reports its ELBO, rate and distortion"
        )


def _point_args(pair: Programs, args: tuple, rows: tuple) -> Callable[[int], tuple]:
    """Point j's arguments alone: a program bound by name rebinds its row (a sequence gets
    its own length, a constant stays whole); otherwise the batch's arguments sliced."""
    x, y = rows
    if pair.binder is not None:
        return lambda j: pair.eval_args(x[j : j + 1], None if y is None else y[j : j + 1])
    return lambda j: tuple(a[j : j + 1] for a in args)


def _psis_or_note(
    pair: Programs, args: tuple, draws: int, seed: int, idx: list[int]
) -> tuple[dict[str, Any] | None, str | None]:
    """:func:`psis`, or ``(None, why)`` for a program with global latent sites: their
    importance ratios are shared by every point, so a per-point k-hat and IW bound are
    undefined, while the guide draws, NUTS and the figures of the local sites still run.
    Any other refusal (no prior, a point-mass guide, too few draws) stays one error."""
    try:
        return psis(pair, args, draws, seed, idx), None
    except UserError as exc:
        if not pair.global_sites or not pair.has_prior or pair.point_mass or draws < 20:
            raise
        return None, f"PSIS skipped: {exc}"


def _check_options(points: int, nuts_points: int, chains: int, amortization_points: int) -> None:
    if not 0 <= nuts_points <= points:
        raise UserError(f"--nuts-points must lie in 0..--points ({points}), got {nuts_points}")
    if chains < 1:
        raise UserError(f"--chains must be at least 1, got {chains}")
    if amortization_points < 0:
        raise UserError(f"--amortization-points cannot be negative, got {amortization_points}")


def _report(
    idata: az.InferenceData,
    idx: list[int],
    draws: int,
    diag: dict[str, Any] | None,
    step: int | None,
) -> dict[str, Any]:
    """The report's PSIS part: k-hat per point and its shares above 0.5 and 0.7 (none of
    it without ``diag``: a program with global latent sites)."""
    post = idata.posterior
    sites = list(post.data_vars)
    report: dict[str, Any] = {} if step is None else {"step": step}
    report |= {
        "points": idx,
        "draws": draws,
        "latent_sites": sites,  # the guide trace's of these points
        "latent_values": [f"{n}[{i}]" for n in sites for i in range(post.sizes[dim_name(n)])],
    }
    if diag is None:
        return report | {"nuts": []}
    khat = diag["khat"].values
    return report | {
        "khat": khat.tolist(),
        "khat_share_above_0.5": float((khat > KHAT_GOOD).mean()),
        "khat_share_above_0.7": float((khat > KHAT_BAD).mean()),
        "khat_median": float(np.median(khat)),
        "khat_max": float(khat.max()),
        "mean_elbo": float(diag["elbo"].mean()),
        "mean_iw_log_p": float(diag["log_p"].mean()),
        "mean_gap_kl_q_to_posterior": float(diag["gap"].mean()),
        "nuts": [],
    }


def _nuts_references(
    pair: Programs,
    point_args: Callable[[int], tuple],
    idx: list[int],
    idata: az.InferenceData,
    diag: xr.Dataset,
    report: dict[str, Any],
    nuts_points: int,
    options: dict[str, int],
    seed: int,
) -> az.InferenceData | None:
    """NUTS on the first ``nuts_points`` points, one row each appended to
    ``report["nuts"]``; the references stacked (None without any). ``point_args(j)``
    gives point j's arguments alone (a program bound by name rebinds its row, so a
    sequence gets its own length), and the sites compared are those of its own trace.

    Degrade, never die: NUTS enumerates discrete sites out of its draws (CEVAE's t, y) and
    cannot start on a prior without .support (a zuko flow): compare the sites it drew, and
    note a point it could not run, keeping the guide draws and PSIS."""
    khat = None if diag is None else diag["khat"].values
    runs: dict[int, az.InferenceData] = {}
    for j in range(nuts_points):
        one = point_args(j)  # the programs' arguments for point j alone
        try:
            run = reference.nuts_point(
                pair, one, options["samples"], options["warmup"], options["chains"], seed + j
            )
        except UserError:
            raise
        except Exception as exc:
            why = first_line(exc)
            report["nuts"].append({"point": idx[j], "skipped": f"{type(exc).__name__}: {why}"})
            continue
        with torch.no_grad():  # the local sites of this point's own trace
            own = local_sites(pair, traces.trace_pair(pair, one)[1], 1)
        drawn = [n for n in own if n in run.posterior]
        row: dict[str, Any] = {"point": idx[j]}
        if diag is not None:
            row["gap_kl_q_to_posterior"] = float(diag["gap"][j])
        if not drawn:
            row["skipped"] = "NUTS drew none of the latent sites (all discrete, enumerated out)"
            report["nuts"].append(row)
            continue
        runs[idx[j]] = run
        q = reference.flat_draws(idata.posterior.sel(point=idx[j]), drawn)
        if khat is not None:
            row["khat"] = float(khat[j])
        row.update(reference.compare(q, run, drawn))
        not_drawn = [n for n in own if n not in drawn]
        if not_drawn:
            row["sites_not_drawn"] = not_drawn  # enumerated out by NUTS
        report["nuts"].append(row)
    return reference.stack(runs, list(idata.posterior.data_vars)) if runs else None
