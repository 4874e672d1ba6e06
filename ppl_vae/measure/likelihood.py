r"""The record of ``ppl-vae evaluate``: a split's ELBO and importance-weighted log p(x), each
mean with its standard error over the examples (:mod:`ppl_vae.measure.stats`), the rate,
distortion and active units of :func:`~ppl_vae.measure.metrics.evaluate`, and what the
estimates are of. The job that loads a run and writes the record is
:mod:`ppl_vae.runs.evaluate`.

With ``ais_steps > 0`` (``--ais-steps N``) the record adds annealed importance sampling
(:func:`ais_record`, :mod:`ppl_vae.measure.ais`): ``<split>_log_likelihood_ais``, a
stochastic lower bound on the mean log p(x) of the first ``ais_points`` examples, next to
the IW estimate on the same examples; and bidirectional Monte Carlo on as many points
simulated from the model: ``<split>_log_likelihood_upper`` (the reverse chains' stochastic
upper bound) with the forward chains' lower bound on the same simulated points, so the
gap between the two says how far this many steps are from exact. A program that cannot
have either gets one ``ais_note`` saying why.

What the figures are of is read off the traces (:func:`likelihood_of`): ``scored_sites``
(each site the importance weights score as data, with the number of examples it scores)
and ``log_likelihood_of``: ``"x"``, ``"x, y"`` where the model also scores the labels it
is given (so ``<split>_log_likelihood`` estimates log p(x, y) and the ELBO bounds it), or
``"x | y"`` where the labels are passed but only condition the model.

Its tests: ``tests/measure/test_importance.py`` (pPCA's closed forms) and
``tests/runs/test_evaluate_ais.py``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ppl_vae import traces, validate
from ppl_vae.errors import UserError
from ppl_vae.measure.ais import ais_log_likelihood, bdmc
from ppl_vae.measure.importance import MAX_SAMPLES, check_estimable, iw_log_likelihood
from ppl_vae.measure.metrics import TEST_DRAWS, eval_mode, evaluate
from ppl_vae.measure.stats import mean_and_se, standard_error
from ppl_vae.programs import Programs

#: The most annealing steps ``--ais-steps`` accepts (Wu et al. 2017 go to 10000).
MAX_AIS_STEPS = 100_000


def ais_record(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    steps: int = 1000,
    chains: int = 16,
    points: int = 100,
    batch_size: int = 100,
    split: str = "test",
    seed: int = 0,
    iw: torch.Tensor | None = None,
) -> dict[str, Any]:
    """AIS on the first ``points`` rows of ``x`` and BDMC on ``points`` rows simulated
    from the model, ``batch_size`` rows at a time: ``<split>_log_likelihood_ais`` and
    ``<split>_log_likelihood_upper`` with their ``_se`` (over examples) and an ``ais``
    record (settings, acceptance, model evaluations per example, the BDMC lower bound and
    the gap with its paired standard error; ``iw_same_points``: the mean of ``iw``, the
    per-example IW estimates, on the AIS points, and ``ais_minus_iw`` with its paired
    standard error). A program that cannot have the BDMC
    bound (its data is not one site scoring x) keeps the AIS estimate and says why in
    ``ais_note``; one that cannot have AIS raises :class:`UserError`."""
    n = min(points, int(x.shape[0]))
    settings = {"steps": steps, "chains": chains, "leapfrog": 5, "points": n}
    lower, acc = [], []
    for i, rows in enumerate(_row_slices(n, batch_size)):
        yb = None if y is None else y[rows]
        r = ais_log_likelihood(pair, x[rows], yb, steps, chains, seed=seed + i)
        lower.append(r.log_likelihood)
        acc.append(r.acceptance)
    ais = torch.cat(lower)
    record: dict[str, Any] = {}
    mean, se = mean_and_se(ais)
    record[f"{split}_log_likelihood_ais"], record[f"{split}_log_likelihood_ais_se"] = mean, se
    settings["acceptance"] = float(sum(acc) / len(acc))
    settings["evaluations_per_example"] = r.evaluations
    if iw is not None:  # the same points, so the difference has a paired standard error
        settings["iw_same_points"] = float(iw[:n].mean())
        settings["ais_minus_iw"], settings["ais_minus_iw_se"] = mean_and_se(ais - iw[:n].to(ais))
    record[f"{split}_log_likelihood_upper"] = None
    try:
        upper, sim_lower = _bdmc_bounds(pair, x, y, n, steps, chains, batch_size, seed)
    except UserError as exc:
        record["ais_note"] = f"no BDMC upper bound: {exc}"
    else:
        mean, se = mean_and_se(upper)
        record[f"{split}_log_likelihood_upper"] = mean
        record[f"{split}_log_likelihood_upper_se"] = se
        settings["bdmc_lower"], settings["bdmc_lower_se"] = mean_and_se(sim_lower)
        settings["bdmc_gap"], settings["bdmc_gap_se"] = mean_and_se(upper - sim_lower)
        settings["bdmc_data"] = "simulated from the model"
    record["ais"] = settings
    return record


def _row_slices(n: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _bdmc_bounds(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None,
    n: int,
    steps: int,
    chains: int,
    batch_size: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BDMC's upper and lower bounds per example on ``n`` points simulated from the model
    (shaped like the first ``n`` rows of ``x``)."""
    up, low = [], []
    for i, rows in enumerate(_row_slices(n, batch_size)):
        yb = None if y is None else y[rows]
        b = bdmc(pair, x[rows], yb, steps=steps, chains=chains, seed=seed + 1000 + i)
        up.append(b["upper"].log_likelihood)
        low.append(b["lower"].log_likelihood)
    return torch.cat(up), torch.cat(low)


def _rows_scored(site: dict[str, Any], batch: int) -> torch.Tensor:
    """Per example: whether an observed site's log-density counts (its mask is not False)."""
    log_prob = site["log_prob"]
    shape = log_prob.shape if torch.is_tensor(log_prob) else ()
    mask = site["mask"]
    if mask is None or mask is True:
        on = torch.ones(shape)
    elif mask is False:
        on = torch.zeros(shape)
    else:
        on = torch.as_tensor(mask).to(torch.get_default_dtype()).cpu().expand(shape)
    return traces.per_example({**site, "log_prob": on}, batch) > 0


def _label_given(y: torch.Tensor | None, args: tuple, batch: int) -> torch.Tensor:
    """Per example: whether the programs were given its label (ids of -1 are hidden)."""
    if len(args) < 2 or not torch.is_tensor(y):  # no labels (or named arrays, not labels)
        return torch.zeros(batch, dtype=torch.bool)
    if y.dim() == 1 and not y.is_floating_point():
        return (y >= 0).cpu()
    return torch.ones(batch, dtype=torch.bool)


@torch.no_grad()
def likelihood_of(
    pair: Programs, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 100
) -> dict[str, Any]:
    """What :func:`evaluation`'s ELBO and log-likelihood are of, read off the traces of the
    pair on the batches as the measurements run them (``pair.eval_args``, eval mode):

    - ``scored_sites``: ``{site: examples}`` for every site whose log-density the
      importance weights score as data: the model's observed sites (where their mask
      leaves them in), and a discrete latent site the guide pins to a label it was given
      (log q = 0 there, as a guide that sets q(y|x) to the given label does: the weight
      is then p(x, y, z) / q(z|x, y), a score of y, not a sum over it);
    - ``log_likelihood_of``: ``"x"`` when only the data sites (:attr:`Programs.data_sites`)
      are scored, ``"x, <site>"`` when a label site is too (``"x, y"``: the estimate is of
      log p(x, y)), ``"x | y"`` when labels are passed to the programs but no site scores
      them (a conditional model, log p(x | y))."""
    counts: dict[str, int] = {}
    passed = False
    with eval_mode(pair):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            yb = None if y is None else y[start : start + batch_size]
            args = pair.eval_args(xb, yb)
            batch = xb.shape[0]
            given = _label_given(yb, args, batch)
            passed = passed or bool(given.any())
            model_tr, guide_tr = traces.trace_pair(pair, args)
            for name, site in model_tr.nodes.items():
                if site["type"] != "sample":
                    continue
                if site["is_observed"]:
                    rows = _rows_scored(site, batch)
                else:
                    q = guide_tr.nodes.get(name)
                    if q is None or not getattr(q["fn"], "has_enumerate_support", False):
                        continue
                    rows = (traces.per_example(q, batch) == 0).cpu() & given
                counts[name] = counts.get(name, 0) + int(rows.sum())
    scored = {name: k for name, k in counts.items() if k > 0}
    labels = [name for name in scored if name not in pair.data_sites]
    if labels:
        of = ", ".join(["x", *labels])
    else:
        of = "x | y" if passed else "x"
    return {"scored_sites": scored, "log_likelihood_of": of}


def evaluation(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    num_samples: int = 1000,
    split: str = "test",
    seed: int = 0,
    chunk_size: int | None = None,
    batch_size: int = 100,
    progress: bool = False,
    draws: int = TEST_DRAWS,
    ais_steps: int = 0,
    ais_chains: int = 16,
    ais_points: int = 100,
) -> dict[str, Any]:
    """The record of ``ppl-vae evaluate``: ``<split>_elbo``, ``<split>_log_likelihood``
    (mean IW estimate, nats), ``rate``, ``distortion``, ``active_units``, ``kl_per_dim``,
    ``recon_mse`` (all on ``split``), ``iwae_samples``, ``split``, ``seconds``; with
    ``ais_steps`` the keys of :func:`ais_record`.

    Each estimate has its standard error over the examples beside it:
    ``<split>_elbo_stderr``, ``<split>_log_likelihood_stderr``, ``rate_stderr``,
    ``distortion_stderr`` (None for one example). The ELBO, rate and distortion of each
    example are averaged over ``draws`` (``elbo_draws``) draws of the guide first, so
    their standard errors are those of the per-example figures, not of one noisy draw.

    ``<split>_log_likelihood`` is ``None`` for models it does not apply to (no prior,
    point-mass guide), with the reason in ``log_likelihood_note`` (and ``ais_note``).
    ``scored_sites`` and ``log_likelihood_of`` (:func:`likelihood_of`) say what the ELBO
    and the estimate are of: log p(x), log p(x, y) or log p(x | y)."""
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(
            f"--iwae-samples must lie in 1..{MAX_SAMPLES}, got {num_samples}; K=1 gives the ELBO"
        )
    check_ais(ais_steps, ais_chains, ais_points)
    start = time.perf_counter()
    base = evaluate(pair, x, y, seed=seed, draws=draws)
    record: dict[str, Any] = {
        f"{split}_elbo": base["elbo"],
        f"{split}_elbo_stderr": base["elbo_stderr"],
        f"{split}_elbo_scaled": base["elbo_scaled"],  # the program's units (measure.metrics)
        f"{split}_elbo_scaled_stderr": base["elbo_scaled_stderr"],
        f"{split}_log_likelihood": None,
        f"{split}_log_likelihood_stderr": None,
    }
    ais = (ais_steps, ais_chains, ais_points)
    record.update(
        _estimates(pair, x, y, split, num_samples, ais, seed, batch_size, chunk_size, progress)
    )
    keys = ("rate", "rate_stderr", "distortion", "distortion_stderr", "active_units")
    record.update({k: base[k] for k in (*keys, "kl_per_dim")})
    record.update(recon_mse=base["recon_mse"], iwae_samples=num_samples, split=split)
    record.update(elbo_draws=draws)
    record.update(likelihood_of(pair, x, y, batch_size))
    record.update(examples=int(x.shape[0]), seed=seed, seconds=time.perf_counter() - start)
    return record


def check_ais(steps: int, chains: int, points: int) -> None:
    """The AIS options, checked before any work (``steps`` 0 turns AIS off)."""
    validate.integer("ais_steps", steps, 0, MAX_AIS_STEPS)
    validate.integer("ais_chains", chains, 1, 10_000)
    validate.integer("ais_points", points, 1)


def _estimates(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None,
    split: str,
    num_samples: int,
    ais: tuple[int, int, int],
    seed: int,
    batch_size: int,
    chunk_size: int | None,
    progress: bool,
) -> dict[str, Any]:
    """The IW estimate with its standard error and, with ``ais = (steps, chains, points)``
    and ``steps > 0``, :func:`ais_record`'s keys; a note instead where they do not apply."""
    steps, chains, points = ais
    record: dict[str, Any] = {}
    try:
        check_estimable(pair)
    except UserError as exc:
        record["log_likelihood_note"] = str(exc)
        if steps:
            record["ais_note"] = f"no AIS: {exc}"
        return record
    ll = iw_log_likelihood(pair, x, y, num_samples, chunk_size, batch_size, seed, progress)
    record[f"{split}_log_likelihood"] = float(ll.mean())
    record[f"{split}_log_likelihood_stderr"] = standard_error(ll)
    if steps:
        try:
            record.update(
                ais_record(pair, x, y, steps, chains, points, batch_size, split, seed, ll)
            )
        except (UserError, NotImplementedError) as exc:  # e.g. a discrete latent site
            record["ais_note"] = f"no AIS: {exc}"
    return record
