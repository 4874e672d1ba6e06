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

from ppl_vae import checkpoint, curves, data, latent_plots, plots, registry, report
from ppl_vae.autoencoder import Autoencoder
from ppl_vae.errors import UserError
from ppl_vae.evaluate import evaluate
from ppl_vae.failure_modes import diagnose
from ppl_vae.train import FitResult, TrainConfig, fit, resolve_device

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
    def module(self) -> Autoencoder:
        return self.fit.module


def load_data(cfg: RunConfig) -> data.Dataset:
    return data.load(cfg.data, cfg.data_root, cfg.download, cfg.binarize, cfg.train.seed)


def build_model(cfg: RunConfig, ds: data.Dataset) -> Autoencoder:
    """Seed, then build: the same seed gives the same initial weights."""
    pyro.set_rng_seed(cfg.train.seed)
    return registry.build(cfg.model, x_dim=ds.x_dim, **cfg.model_args)


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
            cfg = saved
    cfg.train.validate()
    ds = load_data(cfg)
    module = build_model(cfg, ds)
    module.check(ds.x_train)
    module.check(ds.x_test)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG, cfg.to_dict())
    result = fit(module, ds, cfg.train, out=out, resume=resume)
    job = Run(result, final_metrics(result, ds), ds, cfg, out)
    if out is not None:
        write_json(out / METRICS, job.metrics)
        write_figures(module, ds, out, cfg.train.seed, job.metrics)
        report.write_report(out)
    return job


def final_metrics(result: FitResult, ds: data.Dataset) -> dict[str, Any]:
    """The contract of ``metrics.json`` (see DESIGN.md), evaluated at beta = 1."""
    cfg = result.config
    test = evaluate(result.module, ds.x_test, cfg.eval_batch_size, seed=cfg.seed)
    train = evaluate(result.module, ds.x_train, cfg.eval_batch_size, seed=cfg.seed)
    return {
        "model": type(result.module).__name__,
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
        "warnings": diagnose(test, result.module, ds.x_test),
        "latent_dim": result.module.latent_dim,
        "parameters": sum(p.numel() for p in result.module.parameters()),
        "seconds": result.seconds,
        "history": result.history,
    }


@torch.no_grad()
def write_figures(
    module: Autoencoder,
    ds: data.Dataset,
    out: Path,
    seed: int = 0,
    metrics: dict[str, Any] | None = None,
) -> list[Path]:
    """Every figure the run supports. Any data: ``training_curves.png`` (from
    ``metrics["history"]``) and ``latent_scatter.png`` (posterior means of the test set).
    Image data also: ``reconstructions.png``, ``samples.png`` (prior draws),
    ``latent_manifold.png``, ``interpolation.png`` and ``traversals.png``."""
    metrics = metrics or {}
    module.eval()
    device = module._zero.device
    paths = []
    if metrics.get("history"):
        paths.append(curves.training_curves(metrics["history"], out / "training_curves.png"))
    codes = torch.cat([module.encode(xb.to(device)).cpu() for xb in ds.x_test.split(1000)])
    kl = metrics.get("kl_per_dim")
    paths.append(latent_plots.latent_scatter(codes, out / "latent_scatter.png", ds.y_test, kl))
    if ds.image_shape is None:
        return paths
    # Dimensions by information: KL where the model has a prior, code variance otherwise.
    rank = torch.tensor(kl) if kl else codes.var(0)
    dims = rank.argsort(descending=True, stable=True)[:10].tolist()
    icdf = latent_icdf(module, codes[:, dims[:2]])

    def decode(z: torch.Tensor) -> torch.Tensor:
        return module.decode(z.to(device)).cpu()

    x = ds.x_test[:N_FIGURE].to(device)
    torch.manual_seed(seed)
    pairs = min(8, len(ds.x_test) // 2)
    return paths + [
        plots.reconstructions(
            x, module.reconstruct(x), ds.image_shape, out / "reconstructions.png"
        ),
        plots.image_grid(module.generate(64), ds.image_shape, out / "samples.png"),
        plots.latent_manifold(
            decode,
            module.latent_dim,
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


def latent_icdf(module: Autoencoder, codes: torch.Tensor):
    """Quantile function for figure grids: the prior's (first coordinate; the prior's
    coordinates are i.i.d.), or the codes' empirical quantiles for a model without a prior."""
    if not module.has_prior:
        return lambda p: torch.quantile(codes.flatten().float(), p)
    base = getattr(module.prior(), "base_dist", None)
    try:
        base.icdf(torch.tensor([0.5], device=module._zero.device)[:, None])
    except (AttributeError, NotImplementedError):
        return None  # plots fall back to the standard normal
    return lambda p: base.icdf(p.to(module._zero.device)[:, None])[:, 0].cpu()


def load_run(
    run_dir: str | Path, device: str = "cpu"
) -> tuple[Autoencoder, data.Dataset, RunConfig]:
    """Rebuild a trained model and its data from a run directory (no pickles)."""
    cfg = read_config(run_dir)
    ds = load_data(cfg)
    module = build_model(cfg, ds)
    state = checkpoint.load(run_dir, map_location=resolve_device(device))
    module.load_state_dict(state["module"])
    module.to(resolve_device(device)).eval()
    return module, ds.to(resolve_device(device)), cfg


def load_split(
    run_dir: str | Path, split: str = "test", device: str = "cpu"
) -> tuple[Autoencoder, torch.Tensor]:
    """The trained model of a run directory and one split of its data (``test`` or
    ``train``), for the commands that read runs."""
    if not checkpoint.exists(run_dir):
        raise UserError(f"no checkpoint in {run_dir}; train a model there first (ppl-vae train)")
    module, ds, _ = load_run(run_dir, device)
    return module, ds.x_test if split == "test" else ds.x_train
