"""The ``ppl-vae evaluate`` job: a trained run's ELBO and importance-weighted log p(x).

:func:`evaluate_run` loads the run (its model only from the run's trusted copy), scores a
split (:func:`evaluation`: the ELBO, rate, distortion and active units of
:func:`~ppl_vae.measure.metrics.evaluate` and the IW estimate of
:func:`~ppl_vae.measure.importance.iw_log_likelihood`, each mean with its standard
error over the examples beside it as ``<key>_stderr``), writes ``evaluation.json``
(``evaluation-train.json`` for the training split) under the run's lock and refreshes the report.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from ppl_vae import validate
from ppl_vae.errors import UserError
from ppl_vae.measure.importance import MAX_SAMPLES, check_estimable, iw_log_likelihood
from ppl_vae.measure.metrics import TEST_DRAWS, evaluate
from ppl_vae.programs import Programs
from ppl_vae.runs.build import load_split
from ppl_vae.runs.rundir import RunDir


def output_path(run_dir: Path, split: str) -> Path:
    return run_dir / ("evaluation.json" if split == "test" else f"evaluation-{split}.json")


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
) -> dict[str, Any]:
    """The record of ``ppl-vae evaluate``: ``<split>_elbo``, ``<split>_log_likelihood``
    (mean IW estimate, nats), ``rate``, ``distortion``, ``active_units``, ``kl_per_dim``,
    ``recon_mse`` (all on ``split``), ``iwae_samples``, ``split``, ``seconds``.

    Each estimate has its standard error over the examples beside it:
    ``<split>_elbo_stderr``, ``<split>_log_likelihood_stderr``, ``rate_stderr``,
    ``distortion_stderr`` (None for one example). The ELBO, rate and distortion of each
    example are averaged over ``draws`` (``elbo_draws``) draws of the guide first, so
    their standard errors are those of the per-example figures, not of one noisy draw.

    ``<split>_log_likelihood`` is ``None`` for models it does not apply to (no prior,
    point-mass guide), with the reason in ``log_likelihood_note``."""
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(
            f"--iwae-samples must lie in 1..{MAX_SAMPLES}, got {num_samples}; K=1 gives the ELBO"
        )
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
    else:
        ll = iw_log_likelihood(pair, x, y, num_samples, chunk_size, batch_size, seed, progress)
        record[f"{split}_log_likelihood"] = float(ll.mean())
        se = float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else None
        record[f"{split}_log_likelihood_stderr"] = se
    keys = ("rate", "rate_stderr", "distortion", "distortion_stderr", "active_units")
    record.update({k: base[k] for k in (*keys, "kl_per_dim")})
    record.update(recon_mse=base["recon_mse"], iwae_samples=num_samples, split=split)
    record.update(elbo_draws=draws)
    record.update(examples=int(x.shape[0]), seed=seed, seconds=time.perf_counter() - start)
    return record


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
) -> tuple[dict[str, Any], Path, Path | None]:
    """Score one split of a trained run and write its record; returns the record, the
    file written and the refreshed report (None when the run has none)."""
    from ppl_vae.figures import report

    validate.iwae_samples(iwae_samples)
    validate.batch_size(batch_size)
    validate.seed(seed)
    if chunk_size is not None:
        validate.chunk_size(chunk_size)
    pair, x, y = load_split(run_dir, split, device, trust)
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
    )
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
    rows = [
        (f"{split} ELBO (nats)", record[f"{split}_elbo"], record.get(f"{split}_elbo_stderr")),
        (
            f"{split} log p(x), IW K={record['iwae_samples']}",
            ll,
            record.get(f"{split}_log_likelihood_stderr"),
        ),
        ("  minus ELBO", None if ll is None else ll - record[f"{split}_elbo"], None),
        ("rate (KL)", record["rate"], record.get("rate_stderr")),
        ("distortion", record["distortion"], record.get("distortion_stderr")),
        ("active units", record["active_units"], None),
        ("recon MSE", record["recon_mse"], None),
        ("seconds", record["seconds"], None),
    ]
    width = max(len(k) for k, _, _ in rows)
    lines = [f"{k:<{width}}  {fmt(v, se):>18}" for k, v, se in rows]
    if record.get("log_likelihood_note"):
        lines.append(f"note: {record['log_likelihood_note']}")
    return "\n".join(lines)
