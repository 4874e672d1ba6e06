"""A beta sweep: one VAE per KL weight, and the rate--distortion trade-off it traces.

With :math:`R = \\mathbb{E}_x \\mathrm{KL}(q(z|x)\\|p(z))` (rate) and
:math:`D = -\\mathbb{E}_x \\mathbb{E}_q \\log p(x|z)` (distortion), training at weight
:math:`\\beta` minimises :math:`D + \\beta R`, so a larger :math:`\\beta` buys a lower rate
with a higher distortion (Alemi et al. 2018). Every run is evaluated at :math:`\\beta = 1`
(test ELBO :math:`= -(D + R)`).

:func:`sweep_beta` trains each run through :func:`ppl_vae.run.train_run` into
``DIR/beta-<value>`` and writes, in ``DIR``:

- ``sweep.csv`` and ``sweep.md`` -- beta, rate, distortion, test ELBO, active units and
  the failure mode :mod:`ppl_vae.failure_modes` reports, one row per beta;
- ``rate_distortion.png`` -- distortion against rate, each point labelled with its beta;
- ``samples_by_beta.png`` -- prior samples of each run side by side (image data only).

Example::

    >>> import tempfile
    >>> from ppl_vae.run import RunConfig
    >>> from ppl_vae.train import TrainConfig
    >>> cfg = RunConfig(model_args={"latent_dim": 2}, train=TrainConfig(epochs=1, progress=False))
    >>> rows = sweep_beta(cfg, parse_values("0.5,4"), tempfile.mkdtemp())
    >>> [row["beta"] for row in rows]
    [0.5, 4.0]
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from ppl_vae import plots, rundir, traces
from ppl_vae.errors import UserError
from ppl_vae.run import RunConfig, build_programs, load_data, placeholder, train_run
from ppl_vae.rundir import RunDir
from ppl_vae.train import resolve_device

OUTPUTS = ["sweep.csv", "sweep.md", "rate_distortion.png", "samples_by_beta.png"]
COLUMNS = ("beta", "rate", "distortion", "test_elbo", "active_units", "warning")
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


def run_dir(out: str | Path, beta: float) -> Path:
    return Path(out) / f"beta-{beta:g}"


def check(base: RunConfig, values: list[float], out: str | Path, overwrite: bool) -> None:
    """Everything that can fail before the first run trains, checked before a byte is
    written or removed: the values, the folder and its tables, the run directories, the
    training settings, the device, the model and data."""
    if not values:
        raise UserError("--values lists no beta; pass e.g. --values 0.25,1,4,16")
    if base.train.objective != "elbo":
        raise UserError("a beta sweep trains the beta-weighted ELBO; drop --objective capacity")
    rundir.check_outputs(out, OUTPUTS, overwrite)
    for beta in values:
        RunDir(run_dir(out, beta)).check(resume=False, overwrite=overwrite)
    for beta in values:
        cfg = copy.deepcopy(base)
        cfg.train.beta = beta
        cfg.train.validate()
    resolve_device(base.train.device)
    ds = load_data(base)
    pair = build_programs(base, ds)
    if not pair.has_prior:
        raise UserError(
            f"{base.model} has no latent prior, so beta weights nothing; sweep a VAE-like model"
        )


def sweep_beta(
    base: RunConfig,
    values: list[float],
    out: str | Path,
    overwrite: bool = False,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Train ``base`` once per beta in ``values`` and write the sweep's table and figures
    into ``out``; returns the table's rows. ``log`` (e.g. ``print``) reports each run."""
    out = Path(out)
    check(base, values, out, overwrite)
    with RunDir(out).lock() as top:  # one writer; the tables go in out/manifest.json
        top.cleanup_tmp()
        return _sweep(base, values, top, overwrite, log)


def _sweep(base, values, top: RunDir, overwrite, log) -> list[dict[str, Any]]:
    out = top.path
    rows, samples, image_shape = [], [], None
    for beta in values:
        cfg = copy.deepcopy(base)
        cfg.train.beta = beta
        job = train_run(cfg, run_dir(out, beta), overwrite=overwrite)
        m = job.metrics
        warnings = m.get("warnings") or []
        rows.append(
            {
                "beta": beta,
                "rate": m["rate"],
                "distortion": m["distortion"],
                "test_elbo": m["test_elbo"],
                "active_units": m["active_units"],
                "warning": "; ".join(w.split(":")[0] for w in warnings) or "-",
            }
        )
        image_shape = job.dataset.image_shape
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(cfg.train.seed)
            job.pair.eval()
            samples.append(
                traces.generate(job.pair, placeholder(job.pair, job.dataset, N_SAMPLES)).cpu()
            )
        if log is not None:
            log(format_row(rows[-1]))
    rundir.check_outputs(out, OUTPUTS, overwrite=True)  # nothing of the user's replaced
    written = [*write_table(rows, out), rate_distortion_plot(rows, out / "rate_distortion.png")]
    if image_shape is not None:
        written.append(samples_by_beta(samples, values, image_shape, out / "samples_by_beta.png"))
    for path in written:
        top.record(path)
    return rows


def format_row(row: dict[str, Any]) -> str:
    return (
        f"beta {row['beta']:g}: rate {row['rate']:.3f}, distortion {row['distortion']:.3f}, "
        f"test ELBO {row['test_elbo']:.3f}, active units {row['active_units']}"
        + (f", {row['warning']}" if row["warning"] != "-" else "")
    )


def write_table(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """``sweep.csv`` (full precision) and ``sweep.md`` (a Markdown table)."""
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| beta | rate (nats) | distortion (nats) | test ELBO (nats) | active units | warning |",
        "|---:|---:|---:|---:|---:|:---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['beta']:g} | {r['rate']:.3f} | {r['distortion']:.3f} | {r['test_elbo']:.3f} "
            f"| {r['active_units']} | {r['warning']} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    return out / "sweep.csv", out / "sweep.md"


def rate_distortion_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Distortion against rate, one labelled point per beta, with the line of constant
    ELBO :math:`D + R` through the best run for reference."""
    fig = Figure(figsize=(5, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ordered = sorted(rows, key=lambda r: r["beta"])
    rates = [r["rate"] for r in ordered]
    dists = [r["distortion"] for r in ordered]
    ax.plot(rates, dists, "o-", color="tab:blue")
    for (x, y), betas in label_groups(ordered).items():
        label = "β=" + ", ".join(f"{b:g}" for b in betas)
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
    fig.tight_layout()
    fig.savefig(path)
    return path


def label_groups(rows: list[dict[str, Any]], tol: float = 0.02) -> dict[tuple, list[float]]:
    """Points closer than ``tol`` of the plot's extent share one label (e.g. two
    collapsed runs at rate 0), so labels never print over each other."""
    span_r = max(r["rate"] for r in rows) - min(r["rate"] for r in rows) or 1.0
    span_d = max(r["distortion"] for r in rows) - min(r["distortion"] for r in rows) or 1.0
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        for x, y in groups:
            if abs(r["rate"] - x) < tol * span_r and abs(r["distortion"] - y) < tol * span_d:
                groups[(x, y)].append(r["beta"])
                break
        else:
            groups[(r["rate"], r["distortion"])] = [r["beta"]]
    return groups


def samples_by_beta(
    samples: list[torch.Tensor], values: list[float], image_shape: tuple[int, int], path: Path
) -> Path:
    """One panel of prior samples per beta, side by side."""
    fig = Figure(figsize=(2.2 * len(values), 2.6), dpi=120)
    FigureCanvasAgg(fig)
    for i, (x, beta) in enumerate(zip(samples, values)):
        grid = make_grid(
            plots.as_images(x, image_shape),
            nrow=int(math.isqrt(x.shape[0])),
            padding=2,
            pad_value=1.0,
        )
        ax = fig.add_subplot(1, len(values), i + 1)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"β = {beta:g}")
        ax.axis("off")
    fig.suptitle("prior samples by beta")
    fig.tight_layout()
    fig.savefig(path)
    return path
