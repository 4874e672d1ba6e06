"""The ``ppl-vae evaluate`` job: a trained run's ELBO and importance-weighted log p(x).

:func:`evaluate_run` loads the run (its model only from the run's trusted copy), scores a
split (:func:`evaluation`: the ELBO, rate, distortion and active units of
:func:`~ppl_vae.measure.metrics.evaluate` and the IW estimate of
:func:`~ppl_vae.measure.importance.iw_log_likelihood`, each mean with its standard
error over the examples beside it as ``<key>_stderr``), writes ``evaluation.json``
(``evaluation-train.json`` for the training split) under the run's lock and refreshes the
report.

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
``"x | y"`` where the labels are passed but only condition the model. ``step`` is the
checkpoint's step the record describes (the report flags a record older than the run).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from ppl_vae import traces, validate
from ppl_vae.errors import UserError
from ppl_vae.measure.ais import ais_log_likelihood, bdmc
from ppl_vae.measure.importance import MAX_SAMPLES, check_estimable, iw_log_likelihood
from ppl_vae.measure.metrics import TEST_DRAWS, eval_mode, evaluate
from ppl_vae.programs import Programs
from ppl_vae.runs import checkpoint
from ppl_vae.runs.build import load_split
from ppl_vae.runs.rundir import RunDir


def output_path(run_dir: Path, split: str) -> Path:
    return run_dir / ("evaluation.json" if split == "test" else f"evaluation-{split}.json")


#: The most annealing steps ``--ais-steps`` accepts (Wu et al. 2017 go to 10000).
MAX_AIS_STEPS = 100_000


def _mean_se(v: torch.Tensor) -> tuple[float, float | None]:
    n = len(v)
    return float(v.mean()), (float(v.std() / math.sqrt(n)) if n > 1 else None)


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
    for i, start in enumerate(range(0, n, batch_size)):
        rows = slice(start, min(start + batch_size, n))
        yb = None if y is None else y[rows]
        r = ais_log_likelihood(pair, x[rows], yb, steps, chains, seed=seed + i)
        lower.append(r.log_likelihood)
        acc.append(r.acceptance)
    ais = torch.cat(lower)
    record: dict[str, Any] = {}
    record[f"{split}_log_likelihood_ais"], record[f"{split}_log_likelihood_ais_se"] = _mean_se(ais)
    settings["acceptance"] = float(sum(acc) / len(acc))
    settings["evaluations_per_example"] = r.evaluations
    if iw is not None:  # the same points, so the difference has a paired standard error
        settings["iw_same_points"] = float(iw[:n].mean())
        settings["ais_minus_iw"], settings["ais_minus_iw_se"] = _mean_se(ais - iw[:n].to(ais))
    record[f"{split}_log_likelihood_upper"] = None
    try:
        up, low = [], []
        for i, start in enumerate(range(0, n, batch_size)):
            rows = slice(start, min(start + batch_size, n))
            yb = None if y is None else y[rows]
            b = bdmc(pair, x[rows], yb, steps=steps, chains=chains, seed=seed + 1000 + i)
            up.append(b["upper"].log_likelihood)
            low.append(b["lower"].log_likelihood)
    except UserError as exc:
        record["ais_note"] = f"no BDMC upper bound: {exc}"
    else:
        upper, sim_lower = torch.cat(up), torch.cat(low)
        mean, se = _mean_se(upper)
        record[f"{split}_log_likelihood_upper"], record[f"{split}_log_likelihood_upper_se"] = (
            mean,
            se,
        )
        settings["bdmc_lower"], settings["bdmc_lower_se"] = _mean_se(sim_lower)
        settings["bdmc_gap"], settings["bdmc_gap_se"] = _mean_se(upper - sim_lower)
        settings["bdmc_data"] = "simulated from the model"
    record["ais"] = settings
    return record


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
        f"{split}_log_likelihood": None,
        f"{split}_log_likelihood_stderr": None,
    }
    try:
        check_estimable(pair)
    except UserError as exc:
        record["log_likelihood_note"] = str(exc)
        if ais_steps:
            record["ais_note"] = f"no AIS: {exc}"
    else:
        ll = iw_log_likelihood(pair, x, y, num_samples, chunk_size, batch_size, seed, progress)
        record[f"{split}_log_likelihood"] = float(ll.mean())
        se = float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else None
        record[f"{split}_log_likelihood_stderr"] = se
        if ais_steps:
            try:
                ais = ais_record(
                    pair, x, y, ais_steps, ais_chains, ais_points, batch_size, split, seed, ll
                )
            except (UserError, NotImplementedError) as exc:  # e.g. a discrete latent site
                record["ais_note"] = f"no AIS: {exc}"
            else:
                record.update(ais)
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


def load_split_at_step(
    run_dir: str | Path, split: str = "test", device: str = "cpu", trust: bool = False
) -> tuple[Programs, torch.Tensor, torch.Tensor | None, int | None]:
    """:func:`~ppl_vae.runs.build.load_split` and the step of the checkpoint it loaded
    (:func:`~ppl_vae.runs.checkpoint.recorded_step`), which the results written from it
    record; a checkpoint replaced while it was read (a training run saving) is refused."""
    (pair, x, y), step = checkpoint.read_at_step(
        run_dir, lambda: load_split(run_dir, split, device, trust)
    )
    return pair, x, y, step


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    iwae_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 100,
    chunk_size: int | None = None,
    device: str = "cpu",
    trust: bool = False,
    progress: bool = False,
    ais_steps: int = 0,
    ais_chains: int = 16,
    ais_points: int = 100,
) -> tuple[dict[str, Any], Path, Path | None]:
    """Score one split of a trained run and write its record, which starts with the
    ``step`` of the checkpoint it scored; returns the record, the file written and the
    refreshed report (None when the run has none)."""
    from ppl_vae.figures import report

    validate.iwae_samples(iwae_samples)
    validate.batch_size(batch_size)
    validate.seed(seed)
    if chunk_size is not None:
        validate.chunk_size(chunk_size)
    check_ais(ais_steps, ais_chains, ais_points)
    pair, x, y, step = load_split_at_step(run_dir, split, device, trust)
    record = evaluation(
        pair,
        x,
        y,
        iwae_samples,
        split=split,
        seed=seed,
        chunk_size=chunk_size,
        batch_size=batch_size,
        progress=progress,
        ais_steps=ais_steps,
        ais_chains=ais_chains,
        ais_points=ais_points,
    )
    record = {"step": step, **record}
    run = RunDir(run_dir)
    with run.lock():  # one writer: not while a training run writes here
        out = run.write_json(output_path(Path(), split).name, record)
    return record, out, report.refresh(run)


def table(record: dict, split: str) -> str:
    """A short two-column table of the headline figures, each estimate with its standard
    error (``-104.2 ± 0.4``)."""
    from ppl_vae.figures.report import cell

    def fmt(v, se=None):
        if v is None:
            return "n/a"
        return cell(v, se) if se is not None else f"{v:.3f}" if isinstance(v, float) else str(v)

    ll = record[f"{split}_log_likelihood"]
    of = record.get("log_likelihood_of", "x")
    rows = [
        (f"{split} ELBO (nats)", record[f"{split}_elbo"], record.get(f"{split}_elbo_stderr")),
        (
            f"{split} log p({of}), IW K={record['iwae_samples']}",
            ll,
            record.get(f"{split}_log_likelihood_stderr"),
        ),
        ("  minus ELBO", None if ll is None else ll - record[f"{split}_elbo"], None),
    ]
    if "ais" in record:
        ais = record["ais"]
        n, steps = ais["points"], ais["steps"]
        rows += [
            (
                f"{split} log p({of}), AIS T={steps} ({n} pts)",
                record[f"{split}_log_likelihood_ais"],
                record.get(f"{split}_log_likelihood_ais_se"),
            ),
            (f"  IW K={record['iwae_samples']}, same points", ais.get("iw_same_points"), None),
            (
                f"BDMC on {n} simulated x: upper",
                record.get(f"{split}_log_likelihood_upper"),
                record.get(f"{split}_log_likelihood_upper_se"),
            ),
            ("  lower (AIS)", ais.get("bdmc_lower"), ais.get("bdmc_lower_se")),
            ("  gap (upper - lower)", ais.get("bdmc_gap"), ais.get("bdmc_gap_se")),
        ]
    rows += [
        ("rate (KL)", record["rate"], record.get("rate_stderr")),
        ("distortion", record["distortion"], record.get("distortion_stderr")),
        ("active units", record["active_units"], None),
        ("recon MSE", record["recon_mse"], None),
        ("seconds", record["seconds"], None),
    ]
    width = max(len(k) for k, _, _ in rows)
    lines = [f"{k:<{width}}  {fmt(v, se):>18}" for k, v, se in rows]
    for key in ("log_likelihood_note", "ais_note"):
        if record.get(key):
            lines.append(f"note: {record[key]}")
    return "\n".join(lines)
