"""The ``analyze`` job: the posterior analysis of a trained run (:mod:`ppl_vae.analysis`),
written to ``DIR/analysis/``.

:func:`analyze_run` checks the options, loads the split (labels passed where the programs
take them) and the step of the checkpoint it loaded, and, holding the run's lock with the
folder refused first if it holds files ppl-vae did not write
(:meth:`~ppl_vae.runs.rundir.RunDir.recording`), computes
:func:`~ppl_vae.analysis.posterior.analyze` and writes it (:func:`write`): ``posterior.nc``
(guide and prior draws, dims ``chain, draw, point, <site>_dim``), ``summary.csv``
(``az.summary`` of the guide draws), ``nuts.nc`` and ``nuts_summary.csv`` (NUTS references
with R-hat and ESS), ``report.json`` and the figures, each file atomically; then refreshes
the report. :func:`write_analysis` is the same for a pair in Python, into any folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ppl_vae import validate
from ppl_vae.analysis.posterior import Analysis, analyze
from ppl_vae.errors import UserError
from ppl_vae.programs import Programs
from ppl_vae.runs import atomic

#: The options of :func:`~ppl_vae.analysis.posterior.analyze` that must be at least 1.
POSITIVE = ("points", "draws", "chains", "nuts_samples")


def write(result: Analysis, out: str | Path) -> None:
    """Every file of ``result`` into the folder ``out`` (made when missing), atomically."""
    import arviz as az

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic.writing(out / "posterior.nc") as tmp:
        result.posterior.to_netcdf(str(tmp))
    with atomic.writing(out / "summary.csv") as tmp:
        az.summary(result.posterior, kind="stats").to_csv(tmp)
    if result.nuts is not None:
        with atomic.writing(out / "nuts.nc") as tmp:
            result.nuts.to_netcdf(str(tmp))
        with atomic.writing(out / "nuts_summary.csv") as tmp:
            names = list(result.nuts.posterior.data_vars)
            az.summary(result.nuts, var_names=names).to_csv(tmp)
    for name, fig in result.figures.items():
        with atomic.writing(out / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    atomic.write_text(out / "report.json", json.dumps(result.report, indent=1) + "\n")


def write_analysis(
    pair: Programs,
    x_all: torch.Tensor,
    out: str | Path,
    y_all: torch.Tensor | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`~ppl_vae.analysis.posterior.analyze` (``options`` are its keywords) written
    into the folder ``out``; returns the report."""
    result = analyze(pair, x_all, y_all, **options)
    write(result, out)
    return result.report


def check_options(**options: Any) -> None:
    """The analysis options, checked before any work."""
    for name in POSITIVE:
        if name in options and options[name] < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if options.get("nuts_points", 0) < 0 or options.get("nuts_warmup", 0) < 0:
        raise UserError("--nuts-points and --nuts-warmup cannot be negative")
    if "draws" in options:
        validate.draws(options["draws"])
    if "seed" in options:
        validate.seed(options["seed"])
    for name in ("points", "chains", "nuts_samples", "nuts_points", "nuts_warmup"):
        if name in options:
            validate.integer(name, options[name], 0, validate.MAX_SAMPLES)
    if options.get("amortization_points", 0) < 0:
        raise UserError("--amortization-points cannot be negative")


def analyze_run(
    run_dir: str | Path,
    split: str = "test",
    device: str = "cpu",
    trust: bool = False,
    **options: Any,
) -> tuple[dict[str, Any], Path, Path | None]:
    """Analyse one split of a trained run into ``run_dir/analysis`` (``options``: the
    keywords of :func:`~ppl_vae.analysis.posterior.analyze` but ``step``); returns the
    report, the folder and the refreshed report page (None when the run has none)."""
    from ppl_vae.runs import report
    from ppl_vae.runs.evaluate import load_split_at_step
    from ppl_vae.runs.rundir import RunDir

    check_options(**options)
    validate.device(device)
    run_dir = Path(run_dir)
    pair, x, y, step = load_split_at_step(run_dir, split, device, trust)
    out = run_dir / "analysis"
    # the lock; the files go in the manifest (an absolute root: RunDir.recording lists the
    # folder's files relative to it, which fails for a relative run directory)
    with RunDir(run_dir.absolute()).recording("analysis"):
        y = y if pair.takes_labels else None
        record = write_analysis(pair, x, out, y, step=step, **options)
    return record, out, report.refresh(run_dir)
