"""A beta sweep: one VAE per KL weight, and the rate--distortion trade-off it traces.

With :math:`R = \\mathbb{E}_x \\mathrm{KL}(q(z|x)\\|p(z))` (rate) and
:math:`D = -\\mathbb{E}_x \\mathbb{E}_q \\log p(x|z)` (distortion), training at weight
:math:`\\beta` minimises :math:`D + \\beta R`, so a larger :math:`\\beta` buys a lower rate
with a higher distortion (Alemi et al. 2018). Every run is evaluated at :math:`\\beta = 1`
(test ELBO :math:`= -(D + R)`).

:func:`sweep_beta` trains each run through :func:`ppl_vae.runs.train.train_run` into
``DIR/beta-<value>`` (the base objective: the beta-VAE's ELBO, or beta-TCVAE's with
``objective="tcvae"``, where beta weights the total correlation alone) and, for each
target capacity asked for, one run of the capacity objective (Burgess et al. 2018) into
``DIR/capacity-<C>``, so both answers to the beta-VAE's trade-off sit in one table. On
data with known generating factors (``dsprites-small``...) each run is also scored with
the disentanglement metrics (:mod:`ppl_vae.runs.disentangle`: MIG, beta-VAE, FactorVAE,
DCI, at their fast settings), written into its run directory as ``disentanglement.json``.
In ``DIR``:

- ``sweep.csv`` and ``sweep.md`` -- objective, beta, capacity, rate, distortion, test
  ELBO (each with its standard error over the test examples: ``rate_stderr``... columns
  in the CSV, ``-104.2 ± 0.4`` in the Markdown), active units, the failure mode
  :mod:`ppl_vae.measure.failure_modes` reports and (with factors) the four metrics, one row per run;
- ``rate_distortion.png`` -- distortion against rate, each point labelled with its beta;
- ``samples_by_beta.png`` -- prior samples of each run side by side (image data only).

Example::

    >>> import tempfile
    >>> from ppl_vae.runs.train import RunConfig
    >>> from ppl_vae.infer.trainer import TrainConfig
    >>> cfg = RunConfig(model_args={"latent_dim": 2}, train=TrainConfig(epochs=1, progress=False))
    >>> rows = sweep_beta(cfg, parse_values("0.5,4"), tempfile.mkdtemp())
    >>> [row["beta"] for row in rows]
    [0.5, 4.0]
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppl_vae import traces
from ppl_vae.data.dataset import note_on_test_set
from ppl_vae.errors import UserError
from ppl_vae.figures.run_figures import placeholder
from ppl_vae.runs import checks
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.rundir import RunDir
from ppl_vae.runs.train import prepare, train_built

OUTPUTS = ["sweep.csv", "sweep.md", "rate_distortion.png", "samples_by_beta.png"]


COLUMNS = (
    "objective",
    "beta",
    "capacity",
    "rate",
    "rate_stderr",
    "distortion",
    "distortion_stderr",
    "test_elbo",
    "test_elbo_stderr",
    "active_units",
    "warning",
)


METRIC_COLUMNS = ("mig", "beta_vae", "factor_vae", "dci_disentanglement")


@dataclass(frozen=True)
class Variant:
    """One run of the sweep: its folder name, its label in figures and its settings."""

    name: str
    label: str
    objective: str
    beta: float = 1.0
    capacity: float | None = None

    def config(self, base: RunConfig) -> RunConfig:
        cfg = copy.deepcopy(base)
        cfg.train.objective = self.objective
        cfg.train.beta = self.beta
        if self.capacity is not None:
            cfg.train.capacity_max = self.capacity
            cfg.train.beta_schedule = "constant"
        return cfg


def variants(
    base: RunConfig, values: list[float], capacities: list[float] | None = None
) -> list[Variant]:
    """One run per beta (of the base objective) and one per target capacity."""
    tc = base.train.objective == "tcvae"
    out = [
        Variant(f"beta-{b:g}", f"{'TC ' if tc else ''}β={b:g}", base.train.objective, b)
        for b in values
    ]
    out += [Variant(f"capacity-{c:g}", f"C={c:g}", "capacity", 1.0, c) for c in capacities or []]
    return out


N_SAMPLES = 16


def parse_values(text: str) -> list[float]:
    """``"0.25,1,4,16"`` to ``[0.25, 1.0, 4.0, 16.0]``: positive, finite and distinct."""
    values = []
    for item in str(text).split(","):
        try:
            value = float(item)
        except ValueError:
            raise UserError(
                f"--values expects numbers separated by commas, e.g. 0.25,1,4,16; got {item!r}"
            ) from None
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"every beta must be positive (poutine.scale refuses 0), got {item!r}")
        values.append(value)
    if len(set(values)) != len(values):
        raise UserError(f"--values lists a beta twice: {text}")
    return values


def parse_capacities(text: str | None) -> list[float]:
    """``"5,10"`` to ``[5.0, 10.0]`` (target capacities in nats); ``None`` to ``[]``."""
    if not text:
        return []
    values = []
    for item in str(text).split(","):
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"--capacities expects numbers like 5,10; got {item!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"every capacity must be a number of nats >= 0, got {item!r}")
        values.append(value)
    return values


def check(
    base: RunConfig,
    values: list[float],
    out: str | Path,
    overwrite: bool,
    capacities: list[float] | None = None,
) -> tuple:
    """Everything that can fail before the first run trains, checked before a byte is
    written or removed: the values, the folder and its tables, the run directories, the
    training settings, the device, the model and data. Returns the first run, prepared
    (:func:`~ppl_vae.runs.train.prepare`: its model built and traced once)."""
    if not values:
        raise UserError("--values lists no beta; pass e.g. --values 0.25,1,4,16")
    if base.train.objective not in ("elbo", "tcvae"):
        raise UserError(
            "a beta sweep trains the beta-weighted ELBO (or --objective tcvae); for the "
            "capacity objective pass --capacities C1,C2 instead of --objective capacity"
        )
    checks.check_outputs(out, OUTPUTS, overwrite)
    runs = variants(base, values, capacities)
    for variant in runs:
        RunDir(checks.check_member(out, variant.name)).check(resume=False, overwrite=overwrite)
        variant.config(base).train.validate()
    first = prepare(runs[0].config(base), Path(out) / runs[0].name, overwrite=overwrite)
    if not first[2].has_prior:
        raise UserError(
            f"{base.model} has no latent prior, so beta weights nothing; sweep a VAE-like model"
        )
    return first


def sweep_beta(
    base: RunConfig,
    values: list[float],
    out: str | Path,
    overwrite: bool = False,
    log: Any = None,
    capacities: list[float] | None = None,
) -> list[dict[str, Any]]:
    """Train ``base`` once per beta in ``values`` (and once per target capacity in
    ``capacities``) and write the sweep's table and figures into ``out``; returns the
    table's rows. ``log`` (e.g. ``print``) reports each run."""
    out = Path(out)
    first = check(base, values, out, overwrite, capacities)
    with RunDir(out).lock() as top:  # one writer; the tables go in out/manifest.json
        top.cleanup_tmp()
        return _sweep(base, variants(base, values, capacities), top, overwrite, log, first)


def _sweep(base, runs: list[Variant], top: RunDir, overwrite, log, first) -> list[dict[str, Any]]:
    out = top.path
    rows, samples, image_shape = [], [], None
    for i, variant in enumerate(runs):
        cfg, ds, pair, run = (
            first
            if i == 0
            else prepare(variant.config(base), out / variant.name, overwrite=overwrite, ds=first[1])
        )
        job = train_built(cfg, ds, pair, run, overwrite=overwrite)
        m = job.metrics
        warnings = m.get("warnings") or []
        rows.append(
            {
                "objective": variant.objective,
                "beta": variant.beta,
                "capacity": variant.capacity,
                "rate": m["rate"],
                "rate_stderr": m.get("rate_stderr"),
                "distortion": m["distortion"],
                "distortion_stderr": m.get("distortion_stderr"),
                "test_elbo": m["test_elbo"],
                "test_elbo_stderr": m.get("test_elbo_stderr"),
                "active_units": m["active_units"],
                "warning": "; ".join(w.split(":")[0] for w in warnings) or "-",
                "label": variant.label,
            }
        )
        if getattr(job.dataset, "factors", None) is not None:
            rows[-1].update(disentanglement(job, out / variant.name, cfg.train.seed))
        image_shape = job.dataset.image_shape
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(cfg.train.seed)
            job.pair.eval()
            samples.append(
                traces.generate(job.pair, placeholder(job.pair, job.dataset, N_SAMPLES)).cpu()
            )
        if log is not None:
            log(format_row(rows[-1]))
    checks.check_outputs(out, OUTPUTS, overwrite=True)  # nothing of the user's replaced
    with top.staged() as path_for:  # each file by rename, one manifest write
        note = note_on_test_set(first[1])
        write_table(rows, path_for("sweep.csv"), path_for("sweep.md"), note)
        rate_distortion_plot(rows, path_for("rate_distortion.png"))
        if image_shape is not None:
            labels = [r["label"] for r in rows]
            samples_by_beta(samples, labels, image_shape, path_for("samples_by_beta.png"))
    return rows


def disentanglement(job, path: Path, seed: int) -> dict[str, float]:
    """Score a finished run with the disentanglement metrics at their fast settings (one
    sweep scores many runs; ``ppl-vae disentangle DIR`` rescores one at the reference's);
    the full record goes into its run directory as ``disentanglement.json``."""
    from ppl_vae.runs import disentangle

    record = disentangle.scores(job.pair, job.dataset, seed=seed, fast=True)
    record["step"] = job.fit.step  # the run's checkpoint: it just trained to here
    with RunDir(path).lock() as run:
        run.write_json("disentanglement.json", record)
    return {k: record[k] for k in METRIC_COLUMNS}


def format_row(row: dict[str, Any]) -> str:
    metrics = ", ".join(f"{k} {row[k]:.3f}" for k in METRIC_COLUMNS if k in row)
    return (
        f"{row['label']}: rate {estimate(row, 'rate')}, distortion "
        f"{estimate(row, 'distortion')}, test ELBO {estimate(row, 'test_elbo')}, "
        f"active units {row['active_units']}"
        + (f", {metrics}" if metrics else "")
        + (f", {row['warning']}" if row["warning"] != "-" else "")
    )


def write_table(
    rows: list[dict[str, Any]], csv_path: Path, md_path: Path, note: str | None = None
) -> tuple[Path, Path]:
    """``sweep.csv`` (full precision) and ``sweep.md`` (a Markdown table, with ``note`` on
    the test set below it)."""
    metrics = [k for k in METRIC_COLUMNS if any(k in r for r in rows)]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, *metrics], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    head = "| run | rate (nats) | distortion (nats) | test ELBO (nats) | active units |"
    head += "".join(f" {k} |" for k in metrics) + " warning |"
    lines = [head, "|:---|---:|---:|---:|---:|" + "---:|" * len(metrics) + ":---|"]
    for r in rows:
        cells = "".join(f" {r[k]:.3f} |" for k in metrics)
        est = " | ".join(estimate(r, k) for k in ("rate", "distortion", "test_elbo"))
        lines.append(f"| {r['label']} | {est} | {r['active_units']} |{cells} {r['warning']} |")
    if note:
        lines += ["", f"Test set: {note}."]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def estimate(row: dict[str, Any], key: str) -> str:
    """A Markdown cell: ``value ± stderr`` where the row has the standard error, else the
    value to three decimals."""
    from ppl_vae.runs.report import plus_minus

    stderr = row.get(f"{key}_stderr")
    return plus_minus(row[key], stderr) if stderr is not None else f"{row[key]:.3f}"


def rate_distortion_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Distortion against rate, one labelled point per beta, with the line of constant
    ELBO :math:`D + R` through the best run for reference."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ppl_vae.figures.canvas import tight_layout

    fig = Figure(figsize=(5, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ordered = sorted(rows, key=lambda r: r["rate"])
    rates = [r["rate"] for r in ordered]
    dists = [r["distortion"] for r in ordered]
    ax.plot(rates, dists, "o-", color="tab:blue")
    for (x, y), betas in label_groups(ordered).items():
        label = ", ".join(betas)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    best = max(ordered, key=lambda r: r["test_elbo"])
    total = best["rate"] + best["distortion"]
    lo, hi = 0.0, max(rates) * 1.05 + 1e-3
    ax.plot(
        [lo, hi],
        [total - lo, total - hi],
        "--",
        color="gray",
        lw=0.8,
        label=f"D + R = {total:.1f} (best ELBO)",
    )
    ax.set_xlabel("rate R = KL(q(z|x) || p(z))  [nats]")
    ax.set_ylabel("distortion D = -E log p(x|z)  [nats]")
    ax.set_title("rate–distortion across beta")
    ax.legend(fontsize=8)
    tight_layout(fig)
    fig.savefig(path, format="png")
    return path


def label_groups(rows: list[dict[str, Any]], tol: float = 0.02) -> dict[tuple, list[str]]:
    """Points closer than ``tol`` of the plot's extent share one label (e.g. two
    collapsed runs at rate 0), so labels never print over each other."""
    span_r = max(r["rate"] for r in rows) - min(r["rate"] for r in rows) or 1.0
    span_d = max(r["distortion"] for r in rows) - min(r["distortion"] for r in rows) or 1.0
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        for x, y in groups:
            if abs(r["rate"] - x) < tol * span_r and abs(r["distortion"] - y) < tol * span_d:
                groups[(x, y)].append(r.get("label", f"β={r['beta']:g}"))
                break
        else:
            groups[(r["rate"], r["distortion"])] = [r.get("label", f"β={r['beta']:g}")]
    return groups


def samples_by_beta(
    samples: list[torch.Tensor], labels: list[str], image_shape: tuple[int, ...], path: Path
) -> Path:
    """One panel of prior samples per run, side by side, titled with its label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ppl_vae.figures import images as plots
    from ppl_vae.figures.canvas import tight_layout

    fig = Figure(figsize=(2.2 * len(labels), 2.6), dpi=120)
    FigureCanvasAgg(fig)
    for i, (x, label) in enumerate(zip(samples, labels)):
        grid = plots.make_grid(plots.as_images(x, image_shape), nrow=int(math.isqrt(x.shape[0])))
        ax = fig.add_subplot(1, len(labels), i + 1)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(label)
        ax.axis("off")
    fig.suptitle("prior samples by beta")
    tight_layout(fig)
    fig.savefig(path, format="png")
    return path
