"""A training job end to end: data, model, :func:`ppl_vae.train.fit`, and the run directory.

The run directory (``--out``) holds:

- ``config.json`` -- :class:`RunConfig`: everything needed to rebuild model and data;
- ``checkpoint.json`` + ``checkpoint-<step>.safetensors`` -- written every epoch;
- ``metrics.json`` -- ``train_elbo``, ``test_elbo``, ``test_recon_mse``, ``rate``,
  ``distortion``, ``kl_per_dim``, ``active_units``, ``history``, ``seconds``;
- figures (:func:`write_figures`) and ``report.html``, the page that shows them all.

Example::

    >>> cfg = RunConfig(model="vae", model_args={"latent_dim": 2},
    ...                 train=TrainConfig(epochs=1, progress=False))
    >>> job = train_run(cfg)
    >>> job.metrics["test_elbo"] < 0
    True
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from ppl_vae import checkpoint, data, registry, traces
from ppl_vae.errors import UserError
from ppl_vae.evaluate import evaluate
from ppl_vae.failure_modes import diagnose
from ppl_vae.programs import Programs
from ppl_vae.train import (
    FitResult,
    TrainConfig,
    check_data,
    example_batch,
    fit,
    move_programs,
    recommended,
    resolve_device,
)

CONFIG = "config.json"
METRICS = "metrics.json"
N_FIGURE = 32


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
    train: TrainConfig = field(default_factory=TrainConfig)
    #: The training settings the user gave explicitly (the CLI fills this); the model's
    #: recommended ``train_defaults`` replace the others. ``None``: apply none.
    train_explicit: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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
    return data.load(cfg.data, cfg.data_root, cfg.download, cfg.binarize, cfg.train.seed)


def build_model(cfg: RunConfig, ds: data.Dataset):
    """Seed, then build the ``(model, guide)`` programs: the same seed gives the same
    initial weights."""
    pyro.set_rng_seed(cfg.train.seed)
    return registry.build(cfg.model, x_dim=ds.x_dim, **cfg.model_args)


def build_programs(cfg: RunConfig, ds: data.Dataset) -> Programs:
    """Build the model and trace it once on the data: every check a model and data can
    fail (options, shapes, likelihood support) happens here, before anything is written."""
    model, guide = build_model(cfg, ds)
    check_data(model, guide, ds)
    return Programs(model, guide, example_batch(ds), name=Path(cfg.model).stem)


def apply_recommended(cfg: RunConfig, model, guide) -> None:
    """Let the model's recommended training settings replace those the user left at
    their defaults (``cfg.train_explicit`` lists what the user set)."""
    if cfg.train_explicit is None:
        return
    merged = cfg.train.__dict__ | {
        k: v for k, v in recommended(model, guide).items() if k not in cfg.train_explicit
    }
    cfg.train = TrainConfig.from_dict(merged)


def read_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG}); train into it first")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a valid run configuration ({exc})") from None


def write_json(path: Path, obj: Any) -> None:
    checkpoint.atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run by accident; ``overwrite`` replaces a run directory whole."""
    if resume:
        if not checkpoint.exists(out):
            raise UserError(f"--resume: no checkpoint in {out}; train there without --resume first")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                f"{out} already holds files; pass --resume to continue that run, --overwrite to "
                "replace it, or choose another --out"
            )
        if not (out / CONFIG).is_file():
            raise UserError(
                f"--overwrite refuses to empty {out}: it is not a ppl-vae run directory"
            )
        shutil.rmtree(out)


def train_run(
    cfg: RunConfig, out: str | Path | None = None, resume: bool = False, overwrite: bool = False
) -> Run:
    """Train as configured; with ``out``, write the run directory. Bad input raises
    :class:`UserError` before any file is written."""
    out = Path(out) if out is not None else None
    if out is not None:
        prepare_out(out, resume, overwrite)
        if resume:  # the saved configuration wins, but for the new length and the device
            saved = read_config(out)
            saved.train.epochs = cfg.train.epochs
            saved.train.progress, saved.train.device = cfg.train.progress, cfg.train.device
            saved.train_explicit = None
            cfg = saved
    cfg.train.validate()
    ds = load_data(cfg)
    pair = build_programs(cfg, ds)
    apply_recommended(cfg, pair.model, pair.guide)
    cfg.train.validate()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG, cfg.to_dict())
    result = fit(pair, None, ds, cfg.train, out=out, resume=resume)
    job = Run(result, final_metrics(result, ds), ds, cfg, out)
    if out is not None:
        write_json(out / METRICS, job.metrics)
        write_figures(pair, ds, out, cfg.train.seed, job.metrics)
        from ppl_vae import report

        report.write_report(out)
    return job


def final_metrics(result: FitResult, ds: data.Dataset) -> dict[str, Any]:
    """The contract of ``metrics.json`` (see DESIGN.md), evaluated at beta = 1."""
    cfg, pair = result.config, result.pair
    test = evaluate(pair, ds.x_test, ds.y_test, cfg.eval_batch_size, seed=cfg.seed)
    train = evaluate(pair, ds.x_train, ds.y_train, cfg.eval_batch_size, seed=cfg.seed)
    return {
        "model": pair.name,
        "data": ds.name,
        "epochs": len(result.history),
        "steps": result.step,
        "train_elbo": train["elbo"],
        "test_elbo": test["elbo"],
        "test_recon_mse": test["recon_mse"],
        "rate": test["rate"],
        "distortion": test["distortion"],
        "kl_per_dim": test["kl_per_dim"],
        "active_units": test["active_units"],
        "warnings": diagnose(test, pair, ds.x_test, ds.y_test),
        "latent_dim": pair.latent_dim,
        "latent_sites": list(pair.latent_sites),
        "parameters": sum(p.numel() for p in pair.parameters()),
        "seconds": result.seconds,
        "history": result.history,
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
    Figures a program does not support are skipped and named in ``figures_skipped``."""
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


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Programs, data.Dataset, RunConfig]:
    """Rebuild a trained pair and its data from a run directory (no pickles)."""
    cfg = read_config(run_dir)
    dev = resolve_device(device)
    ds = load_data(cfg).to(dev)
    model, guide = build_model(cfg, ds)
    move_programs(model, guide, dev)
    pair = Programs(model, guide, example_batch(ds), name=Path(cfg.model).stem)
    state = checkpoint.load(run_dir, map_location=dev)
    pair.load_state_dict(state["module"])
    pair.to(dev).eval()
    return pair, ds, cfg


def load_split(
    run_dir: str | Path, split: str = "test", device: str = "cpu"
) -> tuple[Programs, torch.Tensor, torch.Tensor | None]:
    """The trained pair of a run directory and one split of its data (``test`` or
    ``train``) with its labels, for the commands that read runs."""
    if not checkpoint.exists(run_dir):
        raise UserError(f"no checkpoint in {run_dir}; train a model there first (ppl-vae train)")
    pair, ds, _ = load_run(run_dir, device)
    if split == "test":
        return pair, ds.x_test, ds.y_test
    return pair, ds.x_train, ds.y_train
