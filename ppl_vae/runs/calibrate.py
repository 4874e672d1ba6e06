"""The ``ppl-vae calibrate`` job: simulation-based calibration of a trained run's guide.

:func:`calibrate_run` loads the run (its model only from the run's trusted copy), draws
``simulations`` pairs :math:`(z, x)` from the model, ``draws`` guide draws for each x, and
ranks the true z among them per latent site and dimension
(:func:`ppl_vae.measure.calibration.calibrate`, Talts et al. 2018). The test split only
gives the shape of a batch (and its labels, for programs that take them): the data are
simulated. Under the run's lock it writes ``calibration.json`` (per site, one record per
dimension: ``histogram``, ``expected``, ``p_value``, ``dispersion``, ``spread``,
``bias``, ``passed``; overall ``passed``; ``summary``: the same per dimension as flat
rows, ``latent`` named ``site[d]``) and ``calibration.png`` (the rank histograms with
their 99% band, :mod:`ppl_vae.figures.calibration`), then refreshes the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ppl_vae import validate
from ppl_vae.figures.calibration import rank_histogram_figure, save_figure
from ppl_vae.measure.calibration import calibrate
from ppl_vae.runs import checkpoint
from ppl_vae.runs.build import load_split
from ppl_vae.runs.rundir import RunDir

RECORD = "calibration.json"
FIGURE = "calibration.png"


def check(simulations: int, draws: int, bins: int, seed: int) -> None:
    """The options, checked before any work."""
    validate.integer("simulations", simulations, 2, 1_000_000)
    validate.integer("draws", draws, 1, 100_000)
    validate.integer("bins", bins, 1, draws + 1)
    validate.seed(seed)


def calibrate_run(
    run_dir: str | Path,
    simulations: int = 1000,
    draws: int = 99,
    bins: int = 10,
    seed: int = 0,
    device: str = "cpu",
    trust: bool = False,
) -> tuple[dict[str, Any], Path, Path, Path | None]:
    """Calibrate the run's guide and write its record and figure; returns the record, the
    two files written and the refreshed report (None when the run has none)."""
    from ppl_vae.runs import report

    check(simulations, draws, bins, seed)
    start = time.perf_counter()
    (pair, x, y), step = checkpoint.read_at_step(
        run_dir, lambda: load_split(run_dir, "test", device, trust)
    )
    like = x[: min(len(x), 1000)]
    labels = None if y is None or not pair.takes_labels else y[: len(like)]
    record = calibrate(pair, like, labels, n=simulations, draws=draws, bins=bins, seed=seed)
    record["summary"] = summary(record)
    record.update(seed=seed, step=step, seconds=time.perf_counter() - start)
    figure = rank_histogram_figure(record)
    run = RunDir(run_dir)
    with run.lock():  # one writer: not while a training run writes here
        run.check_writable([RECORD, FIGURE])
        with run.staged() as path_for:
            save_figure(figure, path_for(FIGURE))
        out = run.write_json(RECORD, record)
    return record, out, out.parent / FIGURE, report.refresh(run)


def summary(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per latent dimension (``latent`` as ``site[d]``), for tables."""
    keys = ("p_value", "dispersion", "spread", "bias", "passed")
    return [
        {"latent": f"{site}[{d}]", **{k: v[k] for k in keys}}
        for site, dims in record["sites"].items()
        for d, v in enumerate(dims)
    ]


def table(record: dict[str, Any]) -> str:
    """One line per latent dimension: p-value, dispersion, spread and verdict."""
    lines = [
        f"{'latent':<14} {'p-value':>8} {'dispersion':>10} {'bias':>7}  spread  passed",
    ]
    for site, dims in record["sites"].items():
        for d, v in enumerate(dims):
            lines.append(
                f"{f'{site}[{d}]':<14} {v['p_value']:>8.3g} {v['dispersion']:>10.3f} "
                f"{v['bias']:>7.3f}  {v['spread']:<6}  {'yes' if v['passed'] else 'NO'}"
            )
    verdict = "calibrated" if record["passed"] else "NOT calibrated"
    lines.append(
        f"{verdict} at alpha {record['alpha']} (Bonferroni: each p >= {record['threshold']:.2g}); "
        f"{record['simulations']} simulations, {record['draws']} guide draws each"
    )
    return "\n".join(lines)
