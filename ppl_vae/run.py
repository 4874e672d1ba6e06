"""A training job end to end: data, model, :func:`ppl_vae.train.fit`, and the run directory.

The run directory (``--out``) holds:

- ``config.json`` -- :class:`RunConfig`: everything needed to rebuild model and data,
  with the SHA-256 of a data file (``data_sha256``) and, for a user's model file, the
  name and SHA-256 of its copy in the run (``model_file`` = ``model.py``, ``model_sha256``);
- ``checkpoint.json`` + ``checkpoint-<step>.safetensors`` -- written every epoch (and every
  ``--checkpoint-every`` steps);
- ``metrics.json`` -- ``train_elbo``, ``test_elbo``, ``test_recon_mse``, ``rate``,
  ``distortion``, ``kl_per_dim``, ``active_units``, ``history``, ``seconds``; the figures
  are the last epoch record's (:func:`final_evaluation`), ``train_elbo`` on the slice of
  the training set the trainer scores each epoch;
- figures (:func:`write_figures`) and ``report.html``, the page that shows them all;
- ``manifest.json`` and ``.lock`` (:mod:`ppl_vae.rundir`).

:func:`train_run` checks everything first -- the run directory, the options, the data,
the model (built and traced once) and the device -- and only then takes the directory's
lock and writes; a run that fails those checks leaves the file system as it was. A fresh
run that fails before its first checkpoint removes what it wrote.

``resume=True`` continues the run in ``out`` with its saved configuration. Options given
again must match it (:func:`resume_differences` lists every one that does not); only
``epochs`` may grow (the schedules keep the span they started with, ``schedule_epochs``),
and ``device``, ``progress`` and ``checkpoint_every`` may change.

Loading a run (:func:`load_run`, used by ``sample``, ``evaluate``, ``analyze``) never runs
code the user did not choose: a user's model runs from the run's own copy, only if its
hash is in the user's trusted list (every model file the user trained with is) or
``trust=True`` (``--trust``).

Example::

    >>> cfg = RunConfig(model="vae", model_args={"latent_dim": 2},
    ...                 train=TrainConfig(epochs=1, progress=False))
    >>> job = train_run(cfg)
    >>> job.metrics["test_elbo"] < 0
    True
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from ppl_vae import checkpoint, data, distributed, registry, rundir, traces, validate
from ppl_vae.errors import UserError
from ppl_vae.failure_modes import diagnose
from ppl_vae.programs import Programs
from ppl_vae.rundir import RunDir
from ppl_vae.train import (
    FitResult,
    TrainConfig,
    check_data,
    epoch_record,
    example_batch,
    fit,
    move_programs,
    recommended,
    resolve_device,
)

CONFIG = "config.json"
METRICS = "metrics.json"
N_FIGURE = 32
#: The figures :func:`write_figures` may write into a run directory.
FIGURES = (
    "training_curves.png",
    "latent_scatter.png",
    "reconstructions.png",
    "samples.png",
    "latent_manifold.png",
    "interpolation.png",
    "traversals.png",
)


@dataclass
class RunConfig:
    """What to train on what: a model name (or ``.py`` path) with its constructor
    arguments, a data source, and the trainer's :class:`~ppl_vae.train.TrainConfig`."""

    model: str = "vae"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    binarize: str = "none"
    #: Keep only this many training labels (stratified); the rest become -1, as the
    #: semi-supervised M2 VAE expects. None keeps them all.
    labels: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    #: The training settings the user gave explicitly (the CLI fills this); the model's
    #: recommended ``train_defaults`` replace the others. ``None``: apply none.
    train_explicit: list[str] | None = None
    #: A user's model file copied into the run (``model.py``) and its SHA-256.
    model_file: str | None = None
    model_sha256: str | None = None
    #: The SHA-256 of the data file (``--data FILE.npz``) the run was trained on.
    data_sha256: str | None = None
    #: The options the user typed (the CLI fills this; not saved): on ``--resume`` only
    #: these are compared with the saved run. None: compare everything.
    given: list[str] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("given")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        names = {f.name for f in dataclasses.fields(cls)} - {"given"}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def is_user_file(self) -> bool:
        """Whether the model is a user's ``.py`` file rather than a suite or plug-in name."""
        return is_model_file(self.model)


def is_model_file(model: str) -> bool:
    return model not in registry.names() and (
        model.endswith(".py") or "/" in model or Path(model).exists()
    )


@dataclass
class Run:
    """A finished job: the fit record, the final metrics, the data and the directory."""

    fit: FitResult
    metrics: dict[str, Any]
    dataset: data.Dataset
    config: RunConfig
    out: Path | None = None

    @property
    def pair(self) -> Programs:
        return self.fit.pair


def load_data(cfg: RunConfig) -> data.Dataset:
    ds = data.load(cfg.data, cfg.data_root, cfg.download, cfg.binarize, cfg.train.seed)
    if cfg.labels is not None:
        from ppl_vae.labels import keep_labels

        if ds.y_train is None:
            raise UserError(f"--labels needs a labelled data set; {ds.name} has no labels")
        y = keep_labels(ds.y_train.cpu(), cfg.labels, seed=cfg.train.seed)
        ds = dataclasses.replace(ds, y_train=y.to(ds.y_train.device))
    return ds


def build_model(cfg: RunConfig, ds: data.Dataset, source: str | Path | None = None):
    """Seed, then build the ``(model, guide)`` programs: the same seed gives the same
    initial weights. ``source`` is the model file to import instead of ``cfg.model`` (a
    run's own checked copy)."""
    pyro.set_rng_seed(cfg.train.seed)
    return registry.build(
        str(source or cfg.model), x_dim=ds.x_dim, image_shape=ds.image_shape, **cfg.model_args
    )


def check_model_options(cfg: RunConfig, source: str | Path | None = None) -> None:
    """Check the constructor options against the model's signature (normalising them in
    ``cfg.model_args``); a user's file is first checked to be a readable Python program."""
    name = str(source or cfg.model)
    if source is None and cfg.is_user_file:
        rundir.read_model_source(name)  # a directory, a text file: one clear line
    spec = registry.resolve(name)
    cfg.model_args = validate.model_options(spec.factory, cfg.model_args, cfg.model)


def build_programs(cfg: RunConfig, ds: data.Dataset, source: str | Path | None = None) -> Programs:
    """Build the model and trace it once on the data: every check a model and data can
    fail (options, shapes, likelihood support) happens here, before anything is written."""
    check_model_options(cfg, source)
    model, guide = build_model(cfg, ds, source)
    check_data(model, guide, ds)
    pair = Programs(model, guide, example_batch(ds), name=Path(cfg.model).stem)
    if not any(True for _ in pair.parameters()):
        raise UserError(
            f"model {cfg.model} has no parameters to train; give its programs pyro.param or "
            "pyro.module parameters"
        )
    return pair


def apply_recommended(cfg: RunConfig, model, guide) -> None:
    """Let the model's recommended training settings replace those the user left at
    their defaults (``cfg.train_explicit`` lists what the user set)."""
    if cfg.train_explicit is None:
        return
    merged = cfg.train.__dict__ | {
        k: v for k, v in recommended(model, guide).items() if k not in cfg.train_explicit
    }
    cfg.train = TrainConfig.from_dict(merged)


def read_config(run_dir: str | Path | RunDir) -> RunConfig:
    """The run's ``config.json`` (read inside the run directory, checked to be an object)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = run.path / CONFIG
    if not path.is_file():
        raise UserError(f"{run.path} is not a run directory (no {CONFIG}); train into it first")
    try:
        body = json.loads(run.resolve(CONFIG).read_text())
        if not isinstance(body, dict) or not isinstance(body.get("train", {}), dict):
            raise TypeError("expected a JSON object with a train object")
        cfg = RunConfig.from_dict(body)
        if not isinstance(cfg.model, str) or not isinstance(cfg.model_args, dict):
            raise TypeError("model must be a name and model_args an object")
        return cfg
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a valid run configuration ({exc}); train again") from None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON outside a run's manifest (atomic); a run's own files use
    :meth:`RunDir.write_json`."""
    checkpoint.atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


#: Training options that may change on --resume (``epochs`` may only grow).
RESUME_FREE = {"epochs", "device", "progress", "checkpoint_every", "schedule_epochs", "jit"}
#: RunConfig fields that are bookkeeping, not options.
BOOKKEEPING = {"train", "train_explicit", "model_file", "model_sha256", "data_sha256", "given"}


def resume_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """Each option of ``new`` that differs from the saved run, as ``name saved -> new``.
    With ``new.given`` (the CLI) only the options the user typed are compared."""
    given = None if new.given is None else set(new.given)
    diffs = []
    same_model = saved.model == new.model
    if not same_model and saved.model_sha256 and is_model_file(new.model):
        path = Path(new.model)
        same_model = path.is_file() and rundir.sha256_file(path) == saved.model_sha256
    if not same_model:
        diffs.append(f"model {saved.model} -> {new.model}")
    for key in sorted(set(saved.model_args) | set(new.model_args)):
        if given is not None and key not in new.model_args:
            continue
        old, now = saved.model_args.get(key, "(default)"), new.model_args.get(key, "(default)")
        if old != now:
            diffs.append(f"{key} {old} -> {now}")
    for f in dataclasses.fields(RunConfig):
        name = f.name
        if name in BOOKKEEPING or name in ("model", "model_args"):
            continue
        if given is not None and name not in given:
            continue
        old, now = getattr(saved, name), getattr(new, name)
        if name == "data" and Path(str(now)).is_file():
            now = str(Path(now).resolve())
        if old != now:
            diffs.append(f"{name} {old} -> {now}")
    for f in dataclasses.fields(TrainConfig):
        name = f.name
        if name in RESUME_FREE or (given is not None and name not in given):
            continue
        old, now = getattr(saved.train, name), getattr(new.train, name)
        if old != now:
            diffs.append(f"{name} {old} -> {now}")
    return diffs


def resumed_config(run: RunDir, cfg: RunConfig) -> RunConfig:
    """The saved configuration of the run in ``run``, after checking that ``cfg`` asks for
    the same run; only the length (``epochs``, which may grow), the device, the progress
    bar and ``checkpoint_every`` are taken from ``cfg``."""
    saved = read_config(run)
    cfg = copy.deepcopy(cfg)
    check_model_options(cfg)  # normalised (hidden "64" is [64]) before comparing
    diffs = resume_differences(saved, cfg)
    if diffs:
        raise UserError(
            f"--resume: options differ from the run in {run.path}: {'; '.join(diffs)}; "
            "drop them to continue that run, or start a new run with another --out"
        )
    if saved.data_sha256 is not None:
        rundir.check_fingerprint(saved.data, saved.data_sha256)
    state = checkpoint.load(run)
    history = state.get("history") if isinstance(state, dict) else None
    done = len(history) if isinstance(history, list) else 0
    epochs = cfg.train.epochs
    if cfg.given is not None and "epochs" not in cfg.given:
        epochs = saved.train.epochs  # resume to the length the run was started with
    if epochs < done:
        raise UserError(
            f"--epochs {epochs} is fewer than the {done} epochs {run.path} has trained; "
            f"pass --epochs {done} or more"
        )
    if saved.train.schedule_epochs is None:
        saved.train.schedule_epochs = saved.train.epochs
    saved.train.epochs = epochs
    saved.train.progress, saved.train.device = cfg.train.progress, cfg.train.device
    saved.train.checkpoint_every = cfg.train.checkpoint_every
    saved.train.jit = cfg.train.jit
    saved.train_explicit = None
    return saved


def model_source(run: RunDir, cfg: RunConfig, trust: bool = False) -> Path | None:
    """The model file to import for a saved run: None for a suite or plug-in model, else
    the run's own copy, checked (:meth:`RunDir.model_file`). A config naming model code
    outside the run is refused: ppl-vae runs only code copied in at train time."""
    if cfg.model_file is None:
        if cfg.is_user_file:
            raise UserError(
                f"{run.path / CONFIG} names model code outside the run ({cfg.model}) and no "
                "copy in the run; ppl-vae will not run it; train the run again"
            )
        return None
    if not isinstance(cfg.model_sha256, str):
        raise UserError(f"{run.path / CONFIG} has no model_sha256 for {cfg.model_file}")
    return run.model_file(cfg.model_file, cfg.model_sha256, trust=trust)


def train_run(
    cfg: RunConfig,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    trust: bool = False,
) -> Run:
    """Train as configured; with ``out``, write the run directory. Bad input raises
    :class:`UserError` before any file is written or removed (see the module docstring).
    ``trust`` allows resuming a run whose model code is not in the trusted list."""
    distributed.init()  # under torchrun: join the process group (else a no-op)
    run = RunDir(out) if out is not None else None
    source = None
    if run is not None:
        distributed.on_main(run.check, resume, overwrite)  # writes nothing; rank 0 decides
        if resume:
            cfg = resumed_config(run, cfg)
            source = model_source(run, cfg, trust)
    cfg.train.validate()
    resolve_device(cfg.train.device)  # --device cuda without a GPU: before any write
    ds = load_data(cfg)
    pair = build_programs(cfg, ds, source)
    apply_recommended(cfg, pair.model, pair.guide)
    cfg.train.validate()
    if run is None:
        result = fit(pair, None, ds, cfg.train)
        return Run(result, final_metrics(result, ds), ds, cfg, None)
    if not resume:
        cfg.train.schedule_epochs = cfg.train.epochs
        if Path(cfg.data).is_file():
            cfg.data = str(Path(cfg.data).resolve())  # loads from any working folder
            cfg.data_sha256 = rundir.sha256_file(cfg.data)
    if not distributed.is_main():  # rank 0 alone writes the run; the others read --resume
        result = fit(pair, None, ds, cfg.train, out=run, resume=resume)
        metrics = final_metrics(result, ds) | {"warnings": []}  # rank 0 reports them
        return Run(result, metrics, ds, cfg, None)
    existed = run.path.exists()
    with run.lock():
        run.prepare(resume, overwrite)
        try:
            return _train_into(run, cfg, pair, ds, resume)
        except (UserError, KeyboardInterrupt):
            if not resume and not checkpoint.exists(run):
                _roll_back(run, existed)
            raise


def _train_into(run: RunDir, cfg: RunConfig, pair: Programs, ds, resume: bool) -> Run:
    if cfg.is_user_file and not resume:
        cfg.model_file, cfg.model_sha256 = run.copy_model_file(cfg.model)
        rundir.trust_hash(cfg.model_sha256)  # the user trained with it
    run.write_json(CONFIG, cfg.to_dict())
    result = fit(pair, None, ds, cfg.train, out=run, resume=resume)
    job = Run(result, final_metrics(result, ds), ds, cfg, run.path)
    run.write_json(METRICS, job.metrics)
    for name in FIGURES:  # plotting writes through whatever sits at the path: check first
        path = run.path / name
        if (path.exists() or path.is_symlink()) and not run.is_own_regular_file(name):
            raise UserError(f"{path} was not written by ppl-vae; move it away and resume")
    figures = write_figures(pair, ds, run.path, cfg.train.seed, job.metrics)
    run.record_all(path.relative_to(run.path).as_posix() for path in figures)
    from ppl_vae import report

    report.write_report(run)
    return job


def _roll_back(run: RunDir, existed: bool) -> None:
    """Remove what a fresh run wrote before it failed (no checkpoint yet: nothing to
    resume), and the directory itself when this run created it."""
    run.cleanup_tmp()
    for name in list(run.manifest()):
        run.remove(name)
    if not existed:
        for name in (rundir.MANIFEST, rundir.LOCK):
            (run.path / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run.path.rmdir()


#: The figures of ``metrics.json`` that an epoch record (:func:`~ppl_vae.train.epoch_record`)
#: holds under the same names: the test set's unless named train.
RECORD_METRICS = (
    "train_elbo",
    "test_elbo",
    "test_recon_mse",
    "rate",
    "distortion",
    "kl_per_dim",
    "active_units",
)


def final_evaluation(result: FitResult, ds: data.Dataset) -> dict[str, Any]:
    """:data:`RECORD_METRICS` of the trained pair. The trainer's last epoch record holds
    them when it was taken at the final step: it evaluated the same weights under the
    same seed and batch size, so the figures are read from it, number for number, rather
    than computed again. Without such a record (no epoch trained, a record from an older
    version) the pair is evaluated here the way the trainer does it each epoch: the test
    set, and ``train_elbo`` on the slice of the training set the trainer scores."""
    last = result.history[-1] if result.history else {}
    if last.get("step") != result.step or any(key not in last for key in RECORD_METRICS):
        last = epoch_record(result, ds, beta=1.0, objective_mean=math.nan)
    return {key: last[key] for key in RECORD_METRICS}


def final_metrics(result: FitResult, ds: data.Dataset) -> dict[str, Any]:
    """The contract of ``metrics.json`` (see DESIGN.md), evaluated at beta = 1; the ELBO,
    rate, distortion and the other figures of :func:`final_evaluation` come from the last
    epoch record."""
    pair = result.pair
    figures = final_evaluation(result, ds)
    return {
        "model": pair.name,
        "data": ds.name,
        "epochs": len(result.history),
        "steps": result.step,
        **figures,
        "warnings": diagnose(figures, pair, ds.x_test, ds.y_test),
        **classification(pair, ds),
        "figures_skipped": skipped_figures(pair, ds),
        "latent_dim": pair.latent_dim,
        "latent_sites": list(pair.latent_sites),
        "parameters": sum(p.numel() for p in pair.parameters()),
        "seconds": result.seconds,
        "jit": result.jit,
        "history": result.history,
    }


def skipped_figures(pair: Programs, ds: data.Dataset) -> list[str]:
    """The figures :func:`write_figures` leaves out for this program and data, each with
    the reason (a user looks for them otherwise)."""
    latent = ("latent_manifold.png", "interpolation.png", "traversals.png")
    if ds.image_shape is None:
        return [
            f"{name}: the data are not images" for name in ("reconstructions.png", "samples.png")
        ] + [f"{name}: the data are not images" for name in latent]
    if len(pair.latent_sites) != 1:
        sites = ", ".join(pair.latent_sites)
        return [
            f"{name}: decoding a code needs one latent site (this has {sites})" for name in latent
        ]
    return []


@torch.no_grad()
def classification(pair: Programs, ds: data.Dataset) -> dict[str, Any]:
    """``test_accuracy`` (and the number of training labels used) for programs whose
    module can ``classify(x)``, such as the semi-supervised M2 VAE; empty otherwise."""
    classify = next(
        (o.classify for o in pair.owners if callable(getattr(o, "classify", None))), None
    )
    if classify is None or ds.y_test is None:
        return {}
    pair.eval()
    predicted = torch.cat([classify(xb) for xb in ds.x_test.split(1000)])
    labelled = int((ds.y_train >= 0).sum()) if ds.y_train is not None else 0
    return {
        "test_accuracy": float((predicted == ds.y_test).float().mean()),
        "train_labels_used": labelled,
    }


def placeholder(pair: Programs, ds: data.Dataset, n: int) -> tuple:
    """A batch of ``n`` test examples (repeated as needed) whose values the programs
    ignore when generating or decoding: it gives them their shapes (and labels)."""
    idx = torch.arange(n, device=ds.x_test.device) % ds.x_test.shape[0]
    y = ds.y_test[idx] if ds.y_test is not None else None
    return pair.args(ds.x_test[idx], y) if pair.takes_labels else (ds.x_test[idx],)


def test_codes(pair: Programs, ds: data.Dataset) -> torch.Tensor:
    """The guide's codes of the whole test set, ``(N, latent_dim)``, on the CPU."""
    from ppl_vae.evaluate import batches

    return torch.cat(
        [traces.codes(pair, a).cpu() for a in batches(ds.x_test, ds.y_test, pair, 1000)]
    )


@torch.no_grad()
def write_figures(
    pair: Programs,
    ds: data.Dataset,
    out: Path,
    seed: int = 0,
    metrics: dict[str, Any] | None = None,
) -> list[Path]:
    """Every figure the run supports. Any data: ``training_curves.png`` (from
    ``metrics["history"]``) and ``latent_scatter.png`` (the guide's codes of the test set).
    Image data also: ``reconstructions.png`` and ``samples.png`` (prior draws); with one
    latent site also ``latent_manifold.png``, ``interpolation.png`` and ``traversals.png``.
    Figures a program does not support are skipped; ``metrics.json`` names them, with the
    reason, in ``figures_skipped`` (:func:`skipped_figures`)."""
    from ppl_vae import curves, latent_plots, plots

    metrics = metrics or {}
    pair.eval()
    paths = []
    if metrics.get("history"):
        paths.append(curves.training_curves(metrics["history"], out / "training_curves.png"))
    codes = test_codes(pair, ds)
    kl = metrics.get("kl_per_dim")
    paths.append(latent_plots.latent_scatter(codes, out / "latent_scatter.png", ds.y_test, kl))
    if ds.image_shape is None:
        return paths
    # Dimensions by information: KL where the model has a prior, code variance otherwise.
    rank = torch.tensor(kl) if kl else codes.var(0)
    dims = rank.argsort(descending=True, stable=True)[:10].tolist()
    n = min(N_FIGURE, ds.x_test.shape[0])
    batch = placeholder(pair, ds, n)
    torch.manual_seed(seed)
    paths += [
        plots.reconstructions(
            batch[0], traces.reconstruct(pair, batch), ds.image_shape, out / "reconstructions.png"
        ),
        plots.image_grid(
            traces.generate(pair, placeholder(pair, ds, 64)), ds.image_shape, out / "samples.png"
        ),
    ]
    if pair.takes_labels and ds.y_test is not None:
        paths.append(class_samples(pair, ds, out / "class_samples.png"))
    if len(pair.latent_sites) != 1:
        return paths  # decoding a code needs a single latent site
    icdf = latent_icdf(pair, ds, codes[:, dims[:2]])

    def decode(z: torch.Tensor) -> torch.Tensor:
        like = placeholder(pair, ds, z.shape[0])
        return traces.decode(pair, z.to(ds.x_test.device), like).cpu()

    pairs = min(8, len(ds.x_test) // 2)
    return paths + [
        plots.latent_manifold(
            decode,
            pair.latent_dim,
            ds.image_shape,
            out / "latent_manifold.png",
            dims=sorted(dims[:2]),
            icdf=icdf,
        ),
        plots.interpolation(
            decode,
            codes[:pairs],
            codes[pairs : 2 * pairs],
            ds.image_shape,
            out / "interpolation.png",
            x_start=ds.x_test[:pairs],
            x_end=ds.x_test[pairs : 2 * pairs],
        ),
        plots.traversals(
            decode, codes[0], ds.image_shape, out / "traversals.png", dims=dims, icdf=icdf
        ),
    ]


@torch.no_grad()
def class_samples(pair: Programs, ds: data.Dataset, path: Path, per_class: int = 8) -> Path:
    """Class-conditional samples of programs that take labels (a CVAE, M2): one row per
    class of the test set (at most 10), ``per_class`` draws of :math:`p(x|z,y)` each."""
    from ppl_vae import plots

    classes = torch.unique(ds.y_test[ds.y_test >= 0])[:10]
    rows = []
    for k in classes:
        x = ds.x_test[:1].expand(per_class, -1)
        y = torch.full((per_class,), int(k), dtype=ds.y_test.dtype, device=ds.y_test.device)
        rows.append(traces.generate(pair, pair.args(x, y)))
    return plots.image_grid(torch.cat(rows), ds.image_shape, path, nrow=per_class)


def latent_icdf(pair: Programs, ds: data.Dataset, codes: torch.Tensor):
    """Quantile function for figure grids: the model's prior at its latent site (first
    coordinate; i.i.d. coordinates assumed), or the codes' empirical quantiles for a model
    without a prior."""
    if not pair.has_prior:
        return lambda p: torch.quantile(codes.flatten().float(), p)
    with pair.scope():
        tr = traces.poutine.trace(pair.model).get_trace(*placeholder(pair, ds, 1))
    fn = tr.nodes[pair.latent_sites[0]]["fn"]
    base = getattr(fn, "base_dist", fn)
    device = ds.x_test.device
    try:
        loc = base.icdf(torch.tensor([0.5], device=device)[:, None])
        if loc.shape[0] != 1:
            return None
    except (AttributeError, NotImplementedError, RuntimeError, ValueError):
        return None  # plots fall back to the standard normal
    return lambda p: base.icdf(p.to(device)[:, None])[:, 0].cpu()


def load_run(
    run_dir: str | Path, device: str = "cpu", trust: bool = False
) -> tuple[Programs, data.Dataset, RunConfig]:
    """Rebuild a trained pair and its data from a run directory (no pickles). A user's
    model runs only from the run's own copy and only when trusted (see the module
    docstring); data that changed since training gives a warning on stderr."""
    run = RunDir(run_dir)
    cfg = read_config(run)
    if not checkpoint.exists(run):
        raise UserError(f"no checkpoint in {run_dir}; train a model there first (ppl-vae train)")
    source = model_source(run, cfg, trust)
    dev = resolve_device(device)
    if cfg.data_sha256 and Path(cfg.data).is_file():
        message = rundir.check_fingerprint(cfg.data, cfg.data_sha256, warn_only=True)
        if message:
            print(f"warning: {message}", file=sys.stderr)
    ds = load_data(cfg).to(dev)
    if source is None:
        check_model_options(cfg)
    model, guide = build_model(cfg, ds, source)
    move_programs(model, guide, dev)
    pair = Programs(model, guide, example_batch(ds), name=Path(cfg.model).stem)
    state = checkpoint.load(run, map_location=dev)
    try:
        pair.load_state_dict(state["module"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(
            f"the checkpoint in {run_dir} does not fit its config.json ({type(exc).__name__}); "
            "train the run again"
        ) from None
    pair.to(dev).eval()
    return pair, ds, cfg


def load_split(
    run_dir: str | Path, split: str = "test", device: str = "cpu", trust: bool = False
) -> tuple[Programs, torch.Tensor, torch.Tensor | None]:
    """The trained pair of a run directory and one split of its data (``test`` or
    ``train``) with its labels, for the commands that read runs."""
    pair, ds, _ = load_run(run_dir, device, trust)
    if split == "test":
        return pair, ds.x_test, ds.y_test
    return pair, ds.x_train, ds.y_train
