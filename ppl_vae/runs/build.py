"""Building a run's pieces once per job: its data, its model (resolved, its options
checked, built and traced once) and, for the commands that read runs, the trained pair.

:func:`model_spec` resolves the model (importing a user's file, after its trust check)
and checks the constructor options; :func:`build_programs` seeds, builds and traces the
pair once on the data; :func:`resumed_config` applies the resume policy to a saved run;
:func:`load_run` rebuilds a trained pair from a run directory without pickles, a user's
model only from the run's own trusted copy (:mod:`ppl_vae.runs.trust`).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pyro
import torch

from ppl_vae import data, registry, validate
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import (
    check_data,
    example_batch,
    move_programs,
    resolve_device,
)
from ppl_vae.inputs import inputs_for
from ppl_vae.programs import Programs
from ppl_vae.runs import checkpoint, checks, fingerprint
from ppl_vae.runs import trust as trust_module
from ppl_vae.runs.config import (
    CONFIG,
    RunConfig,
    read_config,
    resume_differences,
    same_model,
)
from ppl_vae.runs.rundir import RunDir


def load_data(cfg: RunConfig) -> data.Dataset:
    ds = data.load(
        cfg.data,
        cfg.data_root,
        cfg.download,
        cfg.binarize,
        cfg.train.seed,
        cfg.test_binarize_seed,
        image_shape=cfg.image_shape,
    )
    if cfg.labels is not None:
        from ppl_vae.data.labels import keep_labels

        labels = ds.labels_train  # y_train, or a named data set's array y
        if labels is None:
            raise UserError(f"--labels needs a labelled data set; {ds.name} has no labels")
        y = keep_labels(labels.cpu(), cfg.labels, seed=cfg.train.seed)
        ds = ds.with_train_labels(y.to(labels.device))
    return ds


def model_spec(cfg: RunConfig, source: str | Path | None = None) -> registry.Spec:
    """Resolve the model once (a user's file is imported here, after its trust check) and
    check the constructor options against its signature, normalising them in
    ``cfg.model_args``; a user's file is first checked to be a readable Python program.
    ``source`` is the file to import instead of ``cfg.model`` (a run's own checked copy)."""
    name = str(source or cfg.model)
    if source is None and cfg.is_user_file:
        checks.read_model_source(name)  # a directory, a text file: one clear line
    if source is not None:  # the run's copy: run exactly the bytes whose hash was trusted
        spec = registry.load_file(source, cfg.model_sha256)
    else:
        spec = registry.resolve(name)
    cfg.model_args = validate.model_options(spec.factory, cfg.model_args, cfg.model)
    return spec


def check_model_options(cfg: RunConfig, source: str | Path | None = None) -> None:
    """:func:`model_spec` for its checks alone."""
    model_spec(cfg, source)


def build_programs(cfg: RunConfig, ds: data.Dataset, spec: registry.Spec) -> Programs:
    """Seed, build the model and trace it once on the data: every check a model and data
    can fail (options, shapes, likelihood support) happens here, before anything is
    written. The same seed gives the same initial weights."""
    pyro.set_rng_seed(cfg.train.seed)
    model, guide = registry.instantiate(
        spec, x_dim=ds.x_dim, image_shape=ds.image_shape, **cfg.model_args
    )
    check_data(model, guide, ds)
    first = example_batch(ds, model, guide, cfg.train.batch_size)  # a real batch
    example = example_batch(ds, model, guide)
    inputs = inputs_for(cfg.inputs, ds)
    pair = Programs(model, guide, example, Path(cfg.model).stem, batch=first, inputs=inputs)
    cfg.bound = dict(pair.binder.bound) if pair.binder is not None else None
    if not any(True for _ in pair.parameters()):
        raise UserError(
            f"model {cfg.model} has no parameters to train; give its programs pyro.param or "
            "pyro.module parameters"
        )
    return pair


def apply_recommended(cfg: RunConfig, spec: registry.Spec, pair: Programs | None = None) -> None:
    """Let the model's recommended training settings (``train_defaults`` on the class or
    factory that builds it, and with ``pair`` on the module its programs belong to: a
    ``MODEL()`` function returning an SSVAE's programs) replace those the user left at
    their defaults (``cfg.train_explicit`` lists what the user set)."""
    if cfg.train_explicit is None:
        return
    from ppl_vae.infer.trainer import yielding

    recommended = dict(getattr(spec.factory, "train_defaults", None) or {})
    if pair is not None:
        from ppl_vae.infer.trainer import recommended as of_programs

        recommended.update(of_programs(pair))
    recommended = yielding(recommended, cfg.train_explicit)
    merged = cfg.train.__dict__ | {
        k: v for k, v in recommended.items() if k not in cfg.train_explicit
    }
    cfg.train = TrainConfig.from_dict({k: v for k, v in merged.items() if k != "_checked"})


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
    return trust_module.model_file(run, cfg.model_file, cfg.model_sha256, trust=trust)


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
        message = fingerprint.check_fingerprint(cfg.data, cfg.data_sha256, warn_only=True)
        if message:
            print(f"warning: {message}", file=sys.stderr)
    ds = load_data(cfg).to(dev)
    spec = model_spec(cfg, source)
    pyro.set_rng_seed(cfg.train.seed)
    model, guide = registry.instantiate(
        spec, x_dim=ds.x_dim, image_shape=ds.image_shape, **cfg.model_args
    )
    move_programs(model, guide, dev)
    first = example_batch(ds, model, guide, cfg.train.batch_size)  # a real batch
    example = example_batch(ds, model, guide)
    inputs = inputs_for(cfg.inputs, ds)
    pair = Programs(model, guide, example, Path(cfg.model).stem, batch=first, inputs=inputs)
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


def resumed_config(run: RunDir, cfg: RunConfig, trust: bool = False) -> RunConfig:
    """The saved configuration of the run in ``run``, after checking that ``cfg`` asks for
    the same run; only the length (``epochs``, which may grow), the device, the progress
    bar and ``checkpoint_every`` are taken from ``cfg``. The model options given are
    normalised (hidden ``"64"`` is ``[64]``) before the comparison against the model's
    signature; for a user's model file that is the run's own copy, after its trust check
    (:func:`model_source`): the file named on the command line is never imported."""
    saved = read_config(run)
    cfg = copy.deepcopy(cfg)
    if not cfg.is_user_file:
        check_model_options(cfg)
    elif same_model(saved, cfg):
        source = model_source(run, saved, trust)
        cfg.model_sha256 = saved.model_sha256  # load_file runs exactly the bytes checked
        check_model_options(cfg, source)
    diffs = resume_differences(saved, cfg)
    if diffs:
        raise UserError(
            f"--resume: options differ from the run in {run.path}: {'; '.join(diffs)}; "
            "drop them to continue that run, or start a new run with another --out"
        )
    if saved.data_sha256 is not None:
        fingerprint.check_fingerprint(saved.data, saved.data_sha256)
    state = checkpoint.load(run, keep=True)  # fit restores this record: read once
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
    saved.train.jit, saved.train.compile = cfg.train.jit, cfg.train.compile
    saved.train_explicit = None
    return saved
