"""Train several models of the suite on the same data and split, and set them side by side.

Every model goes through :func:`ppl_vae.runs.train.train_run` with the same data source, seed
and training settings, so the only difference is the program. For each model the
comparison reports

- ``test_recon_mse``: :math:`\\frac{1}{N}\\sum_n \\|x_n - g(\\mathbb{E}_q[z|x_n])\\|^2`
  on the test set (squared error summed over pixels, as ``metrics.json``);
- ``test_elbo``: the mean per-example test ELBO in nats where the model keeps a prior
  (``has_prior``), blank otherwise (a masked prior leaves only a reconstruction term);
- ``code_sparsity``: the fraction of test code entries with
  :math:`|h_i| <` :data:`SPARSITY_THRESHOLD` (:math:`10^{-2}`), codes being the
  posterior means;
- ``latent_dim``, ``parameters`` and training ``seconds``;
- with ``generation`` (``--generation``), the quality of each model's samples beside
  its IW log p(x), for deterministic and probabilistic models alike
  (:mod:`ppl_vae.runs.generation`): ``fd`` (Fréchet distance in the features of the
  data set's classifier, lower is better), ``precision`` and ``recall`` (k=3), against
  the test split, with the data's own FD (the floor) under the table;
- beside each estimate its standard error (over the test examples; split-half for the
  generation measures): its own CSV column, and ``-104.2 ± 0.4`` in the Markdown table.

:func:`write` turns the result into ``comparison.csv``, ``comparison.md`` and
``comparison.png`` (the same test images reconstructed by every model, one row each).

Example::

    >>> from ppl_vae.runs.train import RunConfig
    >>> from ppl_vae.infer.trainer import TrainConfig
    >>> base = RunConfig(train=TrainConfig(epochs=1, progress=False))
    >>> result = compare(base, ["ae", "pca"], latent_dim=2)
    >>> [row["model"] for row in result.rows]
    ['ae', 'pca']
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ppl_vae import registry, traces
from ppl_vae.data.dataset import note_on_test_set
from ppl_vae.errors import UserError
from ppl_vae.figures.run_figures import codes_of_test_set, placeholder
from ppl_vae.infer.config import IMPORTANCE_WEIGHTED, OBJECTIVES
from ppl_vae.runs import checks
from ppl_vae.runs import generation as quality
from ppl_vae.runs.config import DEFAULT_LATENT_DIM, DEFAULT_MODELS, RunConfig
from ppl_vae.runs.rundir import RunDir
from ppl_vae.runs.train import Run, prepare, train_built

SPARSITY_THRESHOLD = 1e-2


DEFAULT_IWAE_PARTICLES = 10  # K for MODEL@iwae|miwae|ciwae when --num-particles is not given


N_IMAGES = 10


OUTPUTS = ["comparison.csv", "comparison.md", "comparison.png"]


COLUMNS = (
    "model",
    "test_recon_mse",
    "test_elbo",
    "test_elbo_stderr",
    "test_log_likelihood",
    "test_log_likelihood_stderr",
    "log_likelihood_of",
    "fd",
    "fd_stderr",
    "precision",
    "precision_stderr",
    "recall",
    "recall_stderr",
    "code_sparsity",
    "latent_dim",
    "parameters",
    "seconds",
)


@dataclass
class Comparison:
    """The table (``rows``, one dict per model with :data:`COLUMNS`) and the runs."""

    rows: list[dict[str, Any]]
    runs: dict[str, Run] = field(default_factory=dict)
    out: Path | None = None
    #: Lines for the Markdown table's notes (why a column is blank for every model).
    notes: list[str] = field(default_factory=list)
    #: The data's own Fréchet distance and its standard error, with ``generation``.
    fd_floor: tuple[float, float] | None = None


def parse_models(spec: str | Sequence[str]) -> list[str]:
    """``"vae,ae,vae@iwae"`` (or a list) to checked entries; unknown or repeated names are a
    :class:`UserError` naming them. An entry is a suite name or a ``.py`` model file,
    optionally with ``@objective`` (``vae@iwae``: the same model trained on another
    objective, so objectives compare in one table)."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if not names:
        raise UserError("--models is empty; give a comma-separated list such as vae,ae,pca")
    bad = [n for n in names if n.partition("@")[2] not in ("", *OBJECTIVES)]
    if bad:
        raise UserError(
            f"unknown objective in {', '.join(bad)}; write MODEL@OBJECTIVE with one of "
            f"{', '.join(OBJECTIVES)}"
        )
    unknown = [
        n
        for n in names
        if (m := n.partition("@")[0]) not in registry.names() and not m.endswith(".py")
    ]
    if unknown:
        raise UserError(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(registry.names())}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--models lists {', '.join(repeated)} more than once")
    return names


def code_sparsity(codes: torch.Tensor, threshold: float = SPARSITY_THRESHOLD) -> float:
    """Fraction of code entries with :math:`|h| <` ``threshold``.

    >>> code_sparsity(torch.tensor([[0.0, 0.5], [0.001, -2.0]]))
    0.5
    """
    return float((codes.abs() < threshold).float().mean())


def plan(
    base: RunConfig, models: Sequence[str], shared: dict[str, Any] | None = None
) -> list[RunConfig]:
    """One :class:`RunConfig` per model: ``base`` with that model and the ``shared``
    arguments it accepts (``hidden`` goes only to models with hidden layers). An argument
    no model accepts is a :class:`UserError`."""
    shared = dict(shared or {})
    configs, used = [], set()
    for entry in parse_models(models):
        name, _, objective = entry.partition("@")
        accepted = registry.accepted(name)
        args = {k: v for k, v in shared.items() if accepted is None or k in accepted}
        used |= set(args)
        cfg = dataclasses.replace(base, model=name, model_args=args)
        if objective:
            k = base.train.num_particles
            k = DEFAULT_IWAE_PARTICLES if objective in IMPORTANCE_WEIGHTED and k == 1 else k
            cfg = cfg.replace(train=base.train.replace(objective=objective, num_particles=k))
        configs.append(cfg)
    unused = sorted(set(shared) - used)
    if unused:
        raise UserError(
            f"no model in the comparison takes {', '.join(unused)}; drop it or add a model "
            "that does"
        )
    return configs


def preflight(configs: Sequence[RunConfig], out: Path | None, overwrite: bool) -> list[tuple]:
    """Everything that can fail before training, checked before a byte is written or
    removed: the folder and its tables (:func:`ppl_vae.runs.checks.check_outputs`), and for
    each model its run directory ``out/<model>`` (free, or a run of ours to
    ``overwrite``), its training settings, the device, the data, and the model built and
    traced on it (:func:`~ppl_vae.runs.train.prepare`). Returns the prepared runs."""
    if out is not None:
        checks.check_outputs(out, OUTPUTS, overwrite)
    prepared, ds = [], None
    for cfg in configs:
        name = entry_name(cfg, configs[0])
        try:
            where = checks.check_member(out, name) if out is not None else None
            run = prepare(cfg, where, overwrite=overwrite, ds=ds)
        except UserError as exc:
            raise UserError(f"{name}: {exc}") from None
        ds = run[1]  # one data set for all: the same split
        prepared.append(run)
    return prepared


def compare(
    base: RunConfig,
    models: str | Sequence[str] = DEFAULT_MODELS,
    out: str | Path | None = None,
    latent_dim: int | None = DEFAULT_LATENT_DIM,
    model_args: dict[str, Any] | None = None,
    overwrite: bool = False,
    iwae_samples: int | None = None,
    generation: bool = False,
) -> Comparison:
    """Train each of ``models`` as ``base`` says (data, split, seed, training settings), each
    into ``out/<model>`` when ``out`` is given, and tabulate them; with ``out`` the table
    and figure are written too (:func:`write`). With ``iwae_samples`` each model with a
    prior and a stochastic guide is also scored by the importance-weighted test log p(x);
    with ``generation`` every model by the quality of its samples. Bad input fails before
    any training."""
    shared = dict(model_args or {})
    if latent_dim is not None:
        shared.setdefault("latent_dim", latent_dim)
    dim = shared.get("latent_dim")
    if dim is not None and not (isinstance(dim, int) and dim >= 1):
        raise UserError(f"--latent-dim must be a whole number of at least 1, got {dim!r}")
    out = Path(out) if out is not None else None
    configs = plan(base, models, shared)
    prepared = preflight(configs, out, overwrite)
    result = Comparison(rows=[], out=out)
    ref = _reference(base, result) if generation else None
    top = RunDir(out) if out is not None else None
    with top.lock() if top is not None else contextlib.nullcontext():  # one writer
        for cfg, ds, pair, run in prepared:
            name = entry_name(cfg, base)
            job = train_built(cfg, ds, pair, run, overwrite=overwrite)
            result.runs[name] = job
            result.rows.append(summarise(name, job, iwae_samples, ref))
        if top is not None:
            write(result, top)
    return result


def _reference(base: RunConfig, result: Comparison) -> quality.Reference | str:
    """The real side of the generation measures, once for every model (the same data);
    its floor, classifier and any note go to ``result`` for the Markdown notes."""
    ref = quality.reference(base)
    if isinstance(ref, str):
        result.notes.append(ref)
        return ref
    result.fd_floor = ref.floor
    acc, data = ref.classifier["test_accuracy"], ref.classifier["data"]
    result.notes.append(
        f"FD, precision, recall: the model's samples (as many as the test set has rows) "
        f"against the test split, in the features of a classifier of `{data}`'s labels "
        f"(test accuracy {acc:.3f}); k=3 nearest neighbours; split-half standard errors. "
        f"The data's own FD (test split vs as many train rows), the floor: "
        f"{_cell('fd', *ref.floor)}."
    )
    return ref


@torch.no_grad()
def entry_name(cfg: RunConfig, base: RunConfig) -> str:
    """The row's name and run folder: the model (a file's stem), ``@objective`` when it is
    not the comparison's own."""
    name = Path(cfg.model).stem if cfg.model.endswith(".py") else cfg.model
    if cfg.train.objective != base.train.objective:
        name += f"@{cfg.train.objective}"
    return name


def summarise(
    name: str,
    job: Run,
    iwae_samples: int | None = None,
    ref: quality.Reference | str | None = None,
) -> dict[str, Any]:
    """One row of the table from a finished run; with ``ref``, the generation measures."""
    pair, m = job.pair, job.metrics
    pair.eval()
    codes = codes_of_test_set(pair, job.dataset)
    log_p = log_p_se = of = None
    if iwae_samples and pair.has_prior and not pair.point_mass:
        from ppl_vae.measure.importance import iw_log_likelihood
        from ppl_vae.measure.likelihood import likelihood_of
        from ppl_vae.measure.stats import standard_error

        ds, seed = job.dataset, job.config.train.seed
        ll = iw_log_likelihood(pair, ds.x_test, ds.y_test, iwae_samples, seed=seed)
        log_p = float(ll.mean())
        log_p_se = standard_error(ll)
        of = likelihood_of(pair, ds.x_test, ds.y_test)["log_likelihood_of"]  # m2-vae: "x, y"
    scored = dict.fromkeys(quality.KEYS)
    if ref is not None:
        ds, seed = job.dataset, job.config.train.seed
        scored = quality.generation_record(pair, ref, ds.x_test, ds.y_test, seed)
    return {
        "model": name,
        "test_recon_mse": m["test_recon_mse"],
        "test_elbo": m["test_elbo"] if pair.has_prior else None,
        "test_elbo_stderr": m.get("test_elbo_stderr") if pair.has_prior else None,
        "test_log_likelihood": log_p,
        "test_log_likelihood_stderr": log_p_se,
        "log_likelihood_of": of,
        **{k: scored[k] for k in quality.KEYS},
        "generation_note": scored.get("generation_note"),
        "code_sparsity": code_sparsity(codes),
        "latent_dim": pair.latent_dim,
        "parameters": m["parameters"],
        "seconds": m["seconds"],
    }


def write(result: Comparison, out: str | Path | RunDir) -> list[Path]:
    """``comparison.csv``, ``comparison.md`` and (for image data) ``comparison.png``,
    recorded in ``out/manifest.json`` (under the folder's lock); files there that ppl-vae
    did not write are refused, never replaced."""
    top = out if isinstance(out, RunDir) else RunDir(out)
    with top.lock():
        top.cleanup_tmp()
        checks.check_outputs(top.path, OUTPUTS, overwrite=True)
        with top.staged() as path_for:  # each file by rename, one manifest write
            write_csv(result.rows, path_for("comparison.csv"))
            figure = None
            if result.runs and write_figure(result.runs, path_for("comparison.png")):
                figure = top.path / "comparison.png"
            write_markdown(result, path_for("comparison.md"), figure)
        names = ["comparison.csv", "comparison.md"] + (["comparison.png"] if figure else [])
        return [top.path / name for name in names]


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    return path


#: The Markdown table's columns and their heads: each ``<key>_stderr`` is shown inside its
#: ``<key>``'s cell, and ``log_likelihood_of`` inside the log-likelihood's where it is not
#: of x alone; the generation columns only when some row has them.
HEADS = {
    "model": "model",
    "test_recon_mse": "test recon MSE",
    "test_elbo": "test ELBO",
    "test_log_likelihood": "test log p(x), IW",
    "fd": "FD (lower better)",
    "precision": "precision",
    "recall": "recall",
    "code_sparsity": "code sparsity",
    "latent_dim": "latent dim",
    "parameters": "parameters",
    "seconds": "train s",
}
SHOWN = tuple(HEADS)


def _cell(key: str, value: Any, stderr: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if stderr is not None:
        from ppl_vae.runs.report import plus_minus

        return plus_minus(value, stderr)
    if key in ("test_recon_mse", "test_elbo", "test_log_likelihood", "fd"):
        return f"{value:.3f}"
    if key in ("code_sparsity", "precision", "recall"):
        return f"{value:.2f}"
    if key == "seconds":
        return f"{value:.1f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (the generation columns where some row has them)."""
    scored = any(row.get("fd") is not None for row in rows)
    shown = [k for k in SHOWN if scored or k not in ("fd", "precision", "recall")]
    head = [HEADS[k] for k in shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [_cell(k, row.get(k), row.get(f"{k}_stderr")) for k in shown]
        of = row.get("log_likelihood_of")
        if of not in (None, "x") and row.get("test_log_likelihood") is not None:
            cells[shown.index("test_log_likelihood")] += f" (log p({of}))"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(result: Comparison, path: Path, figure: Path | None = None) -> Path:
    any_run = next(iter(result.runs.values()), None)
    lines = ["# Autoencoder comparison", ""]
    if any_run is not None:
        cfg = any_run.config
        lines += [
            f"Data `{cfg.data}` ({any_run.dataset.x_train.shape[0]} train, "
            f"{any_run.dataset.x_test.shape[0]} test), {cfg.train.epochs} epochs, batch "
            f"{cfg.train.batch_size}, lr {cfg.train.lr:g}, seed {cfg.train.seed}; every model "
            "on the same split.",
            "",
            f"Test set: {note_on_test_set(any_run.dataset)}.",
            "",
        ]
    lines += [
        table(result.rows),
        "",
        "- value ± standard error over the test examples (comparison.csv has each in its own "
        "column).",
        "- test recon MSE: squared error per test example, summed over pixels, of the "
        "decoder mean at the posterior mean code.",
        "- test log p(x), IW: the importance-weighted estimate (--iwae-samples K) for models "
        "with a prior and a stochastic guide; blank otherwise. A model that also scores the "
        "labels it is given (m2-vae) is marked log p(x, y): not comparable with log p(x).",
        "- test ELBO: mean per-example ELBO in nats for models with a latent prior; blank for "
        "models whose prior term is masked. For `sparse-ae` (a point-mass guide) it is the "
        "MAP objective log p(x|h) + log p(h), not a bound on log p(x). ELBOs compare only "
        "between models with the same likelihood (`vae` defaults to Bernoulli pixels, the "
        "others here to Gaussian ones).",
        f"- code sparsity: fraction of test code entries with |h| < {SPARSITY_THRESHOLD:g}.",
        *(f"- {note}" for note in result.notes),
        *(
            f"- {r['model']}: {r['generation_note']}."
            for r in result.rows
            if r.get("generation_note")
        ),
    ]
    if figure is not None:
        order = ", ".join(["input", *result.runs])
        lines += ["", f"![reconstructions]({figure.name})", "", f"Rows of the figure: {order}."]
    path.write_text("\n".join(lines) + "\n")
    return path


@torch.no_grad()
def write_figure(runs: dict[str, Run], path: Path, n: int = N_IMAGES) -> Path | None:
    """The first ``n`` test images (top row), then each model's reconstructions of them,
    each row named by its model."""
    first = next(iter(runs.values()))
    if first.dataset.image_shape is None:
        return None
    x = first.dataset.x_test[:n]
    rows = [x.cpu()]
    for job in runs.values():
        job.pair.eval()
        rows.append(traces.reconstruct(job.pair, placeholder(job.pair, job.dataset, n)).cpu())
    labels = ["input", *runs]
    from ppl_vae.figures import images as plots  # matplotlib and Pillow load only to draw

    return plots.labelled_rows(rows, labels, first.dataset.image_shape, path)
