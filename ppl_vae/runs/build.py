"""Building a run's pieces once per job: its data, its model (resolved, its options
checked, built and traced once) and, for the commands that read runs, the trained pair.

:func:`model_spec` resolves the model (importing a user's file, after its trust check)
and checks the constructor options; :func:`build_programs` seeds, builds and traces the
pair once on the data; :func:`recommended_of` reads the model's recommended settings;
:func:`saved_run` reads what ``--resume`` continues (the policy itself is
:func:`~ppl_vae.runs.config.resolve`'s);
:func:`load_run` rebuilds a trained pair from a run directory without pickles, a user's
model only from the run's own trusted copy (:mod:`ppl_vae.runs.trust`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pyro
import torch

from ppl_vae import data, registry, validate
from ppl_vae.errors import UserError
from ppl_vae.infer.recommend import recommended
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
    refuse_differences,
    resume_differences,
    same_model,
)
from ppl_vae.runs.rundir import RunDir


def load_data(cfg: RunConfig, seed: int | None = None) -> data.Dataset:
    """The run's data set, its random preprocessing drawn with ``seed`` (default: the
    config's training seed)."""
    seed = cfg.train.seed if seed is None else seed
    ds = data.load(
        cfg.data,
        cfg.data_root,
        cfg.download,
        cfg.binarize,
        seed,
        cfg.test_binarize_seed,
        image_shape=cfg.image_shape,
    )
    if cfg.labels is not None:
        from ppl_vae.data.labels import keep_labels

        labels = ds.labels_train  # y_train, or a named data set's array y
        if labels is None:
            raise UserError(f"--labels needs a labelled data set; {ds.name} has no labels")
        y = keep_labels(labels.cpu(), cfg.labels, seed=seed)
        ds = ds.with_train_labels(y.to(labels.device))
    return ds


def model_spec(cfg: RunConfig, source: str | Path | None = None) -> tuple[registry.Spec, RunConfig]:
    """Resolve the model once (a user's file is imported here, after its trust check) and
    check the constructor options against its signature: the spec, and ``cfg`` with the
    options normalised (hidden ``"64"`` is ``[64]``). A user's file is first checked to be
    a readable Python program. ``source`` is the file to import instead of ``cfg.model``
    (a run's own checked copy)."""
    name = str(source or cfg.model)
    if source is None and cfg.is_user_file:
        checks.read_model_source(name)  # a directory, a text file: one clear line
    if source is not None:  # the run's copy: run exactly the bytes whose hash was trusted
        spec = registry.load_file(source, cfg.model_sha256)
    else:
        spec = registry.resolve(name)
    args = validate.model_options(spec.factory, cfg.model_args, cfg.model)
    return spec, cfg.replace(model_args=args)


def build_programs(
    cfg: RunConfig, ds: data.Dataset, spec: registry.Spec, seed: int | None = None
) -> Programs:
    """Seed (``seed``, default the config's), build the model and trace it once on the
    data: every check a model and data can fail (options, shapes, likelihood support)
    happens here, before anything is written. The same seed gives the same initial
    weights."""
    pyro.set_rng_seed(cfg.train.seed if seed is None else seed)
    model, guide = registry.instantiate(
        spec, x_dim=ds.x_dim, image_shape=ds.image_shape, **cfg.model_args
    )
    check_data(model, guide, ds)
    first = example_batch(ds, model, guide, cfg.train.batch_size)  # a real batch
    example = example_batch(ds, model, guide)
    inputs = inputs_for(cfg.inputs, ds)
    pair = Programs(model, guide, example, Path(cfg.model).stem, batch=first, inputs=inputs)
    if not any(True for _ in pair.parameters()):
        raise UserError(
            f"model {cfg.model} has no parameters to train; give its programs pyro.param or "
            "pyro.module parameters"
        )
    return pair


def recommended_of(spec: registry.Spec, pair: Programs | None = None) -> dict[str, Any]:
    """The model's recommended training settings: ``train_defaults`` on the class or
    factory that builds it and, with ``pair``, on the module its programs belong to (a
    ``MODEL()`` function returning an SSVAE's programs)."""
    out = dict(getattr(spec.factory, "train_defaults", None) or {})
    return out | (recommended(pair) if pair is not None else {})


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
    spec, cfg = model_spec(cfg, source)
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


def saved_run(
    run: RunDir, typed: RunConfig, trust: bool = False
) -> tuple[RunConfig, registry.Spec, RunConfig, Path | None]:
    """For ``--resume``: the saved configuration of the run in ``run``, its model's spec
    (for a user's model the run's own copy, after its trust check: the file named on the
    command line is never imported), ``typed`` with its model options normalised against
    that model's signature (when it names the same model), and the copy's path. The data
    file must be the one the run was trained on."""
    saved = read_config(run)
    if not same_model(saved, typed):  # before the run's copy is checked or imported
        if not typed.is_user_file:
            _, typed = model_spec(typed)
        refuse_differences(resume_differences(saved, typed))
    source = model_source(run, saved, trust)
    spec, saved = model_spec(saved, source)
    args = validate.model_options(spec.factory, typed.model_args, typed.model)
    typed = typed.replace(model_args=args)
    if saved.data_sha256 is not None:
        fingerprint.check_fingerprint(saved.data, saved.data_sha256)
    return saved, spec, typed, source


def check_length(run: RunDir, cfg: RunConfig) -> None:
    """``--epochs`` of a resumed run is at least the epochs it has trained."""
    state = checkpoint.load(run, keep=True)  # fit restores this record: read once
    history = state.get("history") if isinstance(state, dict) else None
    done = len(history) if isinstance(history, list) else 0
    if cfg.train.epochs < done:
        raise UserError(
            f"--epochs {cfg.train.epochs} is fewer than the {done} epochs {run.path} has "
            f"trained; pass --epochs {done} or more"
        )
