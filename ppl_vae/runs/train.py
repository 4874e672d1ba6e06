"""A training job end to end: data, model, :func:`ppl_vae.infer.trainer.fit`, and the run directory.

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
- ``history.jsonl`` -- the epoch records, one line each, appended as training goes, and,
  with ``--tensorboard``, ``tensorboard/`` event files (:mod:`ppl_vae.runs.monitor`);
- ``manifest.json`` and ``.lock`` (:mod:`ppl_vae.runs.rundir`).

:func:`train_run` checks everything first -- the run directory, the options, the data,
the model (built and traced once) and the device -- and only then takes the directory's
lock and writes; a run that fails those checks leaves the file system as it was. A fresh
run that fails before its first checkpoint removes what it wrote; a resumed run that fails
(the program raises in a later epoch, the disk fills) is put back as it was before the
command, its checkpoint files and records byte for byte (:func:`_roll_back`).

``resume=True`` continues the run in ``out`` with its saved configuration. Options given
again must match it (:func:`resume_differences` lists every one that does not); only
``epochs`` may grow (the schedules keep the span they started with, ``schedule_epochs``),
and ``device``, ``progress`` and ``checkpoint_every`` may change.

Loading a run (:func:`load_run`, used by ``sample``, ``evaluate``, ``analyze``) never runs
code the user did not choose: a user's model runs from the run's own copy, only if its
hash is in the user's trusted list (every model file the user trained with is) or
``trust=True`` (``--trust``).

Example::

    >>> from ppl_vae.infer.config import TrainConfig
    >>> from ppl_vae.runs.config import RunConfig
    >>> cfg = RunConfig(model="vae", model_args={"latent_dim": 2},
    ...                 train=TrainConfig(epochs=1, progress=False))
    >>> job = train_run(cfg)
    >>> job.metrics["test_elbo"] < 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ppl_vae import data
from ppl_vae.errors import UserError, first_line
from ppl_vae.figures.run_figures import FIGURES, skipped_figures, write_figures
from ppl_vae.figures.worker import FigureWorker
from ppl_vae.infer import distributed
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.elbo import choose
from ppl_vae.infer.optim import check_optimizer
from ppl_vae.infer.trainer import FitResult, fit, resolve_device
from ppl_vae.measure.failure_modes import diagnose
from ppl_vae.measure.metrics import FINAL_METRICS, TEST_DRAWS, epoch_record, evaluate_test_set
from ppl_vae.programs import Programs, label_predictor
from ppl_vae.runs import checkpoint, monitor, rollback, trust
from ppl_vae.runs.build import (
    build_programs,
    check_length,
    load_data,
    model_spec,
    recommended_of,
    saved_run,
)
from ppl_vae.runs.config import CONFIG, RunConfig, resolve, seed_of
from ppl_vae.runs.rundir import RunDir

METRICS = "metrics.json"


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


def train_run(
    cfg: RunConfig,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    trust: bool = False,
    tensorboard: bool = False,
) -> Run:
    """Train as configured; with ``out``, write the run directory. Bad input raises
    :class:`UserError` before any file is written or removed (see the module docstring).
    ``trust`` allows resuming a run whose model code is not in the trusted list;
    ``tensorboard`` writes TensorBoard event files as training goes
    (:mod:`ppl_vae.runs.monitor`)."""
    if tensorboard and out is not None:
        monitor.check_tensorboard()
    cfg, ds, pair, run = prepare(cfg, out, resume, overwrite, trust)
    return train_built(cfg, ds, pair, run, resume, overwrite, tensorboard)


def prepare(
    cfg: RunConfig,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    trust: bool = False,
    ds: data.Dataset | None = None,
) -> tuple[RunConfig, data.Dataset, Programs, RunDir | None]:
    """Every check of a training job, writing nothing: the run directory, the resume
    policy and trust, the data (``ds`` when the caller loaded it), the model (built and
    traced once with the seed the configuration will have), then the configuration,
    resolved and validated once (:func:`~ppl_vae.runs.config.resolve`: ``cfg`` is what
    the user typed), and the device. Returns what :func:`train_built` trains."""
    distributed.init()  # under torchrun: join the process group (else a no-op)
    run = RunDir(out) if out is not None else None
    saved = None
    if run is not None:
        distributed.on_main(run.check, resume, overwrite)  # writes nothing; rank 0 decides
        if resume:
            saved, spec, cfg, _ = saved_run(run, cfg, trust)
    if saved is None:
        spec, cfg = model_spec(cfg)
    built = saved or cfg  # the model and data the run trains
    seed = seed_of(cfg, saved, recommended_of(spec))
    ds = load_data(built, seed) if ds is None else ds
    pair = build_programs(built, ds, spec, seed)
    chooser = partial(chosen_elbo, pair)
    cfg = resolve(cfg, saved, recommended_of(spec, pair), chooser)  # the one validation
    if pair.binder is not None:  # the record of what fed each parameter (inputs by name)
        cfg = cfg.replace(bound=dict(pair.binder.bound))
    resolve_device(cfg.train.device)  # --device cuda without a GPU: before any write
    if saved is not None:
        check_length(run, cfg)
    check_optimizer(cfg.train, ds)  # L-BFGS full batch: known once the data is
    return cfg, ds, pair, run


def chosen_elbo(pair: Programs, train: TrainConfig) -> str:
    """The estimator ``train`` trains ``pair`` with (a wrong meanfield refused)."""
    return choose(pair, train).elbo


def train_built(
    cfg: RunConfig,
    ds: data.Dataset,
    pair: Programs,
    run: RunDir | None,
    resume: bool = False,
    overwrite: bool = False,
    tensorboard: bool = False,
) -> Run:
    """:func:`train_run` after :func:`prepare`'s checks (``compare`` and ``sweep`` prepare
    every run before training any, then call this: each model is built once)."""
    if run is None:
        result = fit(pair, None, ds, cfg.train)
        return Run(result, final_metrics(result, ds), ds, cfg, None)
    checkpointer = checkpoint.RunCheckpointer(run, resume)
    if not distributed.is_main():  # rank 0 alone writes the run; the others read --resume
        result = fit(pair, None, ds, cfg.train, checkpointer)
        metrics = final_metrics(result, ds) | {"warnings": []}  # rank 0 reports them
        return Run(result, metrics, ds, cfg, None)
    with run.lock():  # the one lock of the job: fit and the checkpointer take none
        run.prepare(resume, overwrite)
        run.cleanup_tmp()
        saved = rollback.savepoint(run, resumed_files(run) if resume else ())
        try:
            return _train_into(run, cfg, pair, ds, checkpointer, tensorboard)
        except BaseException as exc:  # any failure: the run goes back to what it was
            rolled = _roll_back(run, resume, saved, exc)
            if isinstance(exc, (UserError, KeyboardInterrupt, SystemExit)):
                raise
            if resume:
                after = (
                    "the run is as it was before this command: fix the cause, then --resume"
                    if rolled
                    else "putting the run back failed too; its last checkpoint is whole"
                )
            elif checkpoint.exists(run):
                after = "its last checkpoint is kept: fix the cause, then --resume"
            else:
                after = "nothing of this run was kept" if rolled else "removing it failed too"
            raise UserError(f"training {cfg.model} failed ({failure_line(exc)}); {after}") from None


def resumed_files(run: RunDir) -> list[str]:
    """The files of a run that a resumed job may replace or append to, saved at its start
    (:func:`rollback.savepoint`): the checkpoint (weights first), the configuration, the
    history and the records, figures and page written at the end."""
    from ppl_vae.runs.report import REPORT

    return [*checkpoint.files(run), CONFIG, monitor.HISTORY, METRICS, *FIGURES, REPORT]


def failure_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception from a program, Pyro's trace-shape table and
    any later lines of the message left out."""
    first = first_line(exc, 300).split("Trace Shapes:")[0].strip() if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _train_into(
    run: RunDir,
    cfg: RunConfig,
    pair: Programs,
    ds,
    checkpointer: checkpoint.RunCheckpointer,
    tensorboard: bool = False,
) -> Run:
    if cfg.is_user_file and not checkpointer.resume:
        model_file, sha = run.copy_model_file(cfg.model)
        cfg = cfg.replace(model_file=model_file, model_sha256=sha)
        trust.check_recordable()  # recorded once the run holds a checkpoint (below)
    from ppl_vae.runs.report import REPORT

    run.check_writable([*FIGURES, METRICS, REPORT])  # before training, not after it
    run.write_json(CONFIG, cfg.to_dict())
    live = monitor.Monitor(run, cfg, ds, checkpointer.resume, tensorboard)
    drawer = FigureWorker.start()  # imports matplotlib on the other core while this trains
    try:
        try:
            result = fit(pair, None, ds, cfg.train, checkpointer, on_epoch=live)
        finally:
            live.close()
            if cfg.is_user_file and not checkpointer.resume and checkpoint.exists(run):
                trust.trust_hash(cfg.model_sha256)  # the user trained with it
        live.close(result.history)  # history.jsonl committed as metrics.json's history
        job = Run(result, final_metrics(result, ds), ds, cfg, run.path)
        run.write_json(METRICS, job.metrics)
        with run.staged() as path_for:  # every figure by rename, one manifest write
            write_figures(pair, ds, path_for, cfg.train.seed, job.metrics, drawer)
    finally:
        drawer.close()
    from ppl_vae.runs import report

    report.write_report(run)
    return job


def _roll_back(run: RunDir, resume: bool, saved: rollback.Savepoint, exc: BaseException) -> bool:
    """Undo a failed job; True when that worked. A resumed run is put back as it was
    before the command (:func:`rollback.roll_back`: checkpoint, configuration, history,
    records; what the job created is removed). A fresh run loses what it wrote (and
    :meth:`RunDir.lock` the directory, when it created it), unless it reached a
    checkpoint: that is kept, to be resumed. An interrupted job (Ctrl-C) keeps its
    checkpoints, as a crash would: ``--resume`` continues from the last."""
    try:
        run.cleanup_tmp()
        if isinstance(exc, KeyboardInterrupt) or (not resume and checkpoint.exists(run)):
            return True
        rollback.roll_back(run, saved)
        return True
    except (OSError, UserError):  # a full disk: the failure that matters is the job's
        return False


def final_evaluation(result: FitResult, ds: data.Dataset) -> dict[str, Any]:
    """:data:`~ppl_vae.measure.metrics.FINAL_METRICS` of the trained pair: the test set's
    figures evaluated again with :data:`~ppl_vae.measure.metrics.TEST_DRAWS` draws per
    example (the epoch records average fewer), the training figures, ``stopped`` and
    ``best_epoch`` read from the record of the weights held (the best epoch's where early
    stopping restored it) when it was taken at their step; without such a record (no
    epoch trained, a record from an older version) the whole record is computed here."""
    last = result.final
    if last.get("step") != result.final_step or any(key not in last for key in FINAL_METRICS):
        epoch = last.get("best_epoch") or len(result.history)
        fresh = epoch_record(result.pair, ds, result.config, epoch, result.final_step)
        last = {**fresh, **{k: last[k] for k in ("stopped", "best_epoch") if k in last}}
    figures = {**last, **evaluate_test_set(result.pair, ds, result.config, TEST_DRAWS)}
    return {key: figures[key] for key in FINAL_METRICS}


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
        **(result.choice.record() if result.choice is not None else {}),
        "compile": result.compile,
        "history": result.history,
    }


@torch.no_grad()
def classification(pair: Programs, ds: data.Dataset) -> dict[str, Any]:
    """``test_accuracy`` (and the number of training labels used) for programs that declare
    a label predictor (:func:`ppl_vae.programs.label_predictor`: ``label_predictor =
    "classify"`` on the suite's M2 VAE, ``"classifier"`` on Pyro's SSVAE), returning class
    ids ``(N,)`` or one row per example ``(N, C)`` (one-hot, or scores: the largest is the
    prediction). Empty without a declaration or test labels; a predictor that fails on x or
    gives another shape leaves ``test_accuracy_note`` instead."""
    if ds.y_test is None or ds.named:  # named arrays: no labels to score (issue 28)
        return {}
    found = label_predictor(pair)
    if found is None:
        return {}
    name, predict = found
    pair.eval()
    n = ds.y_test.shape[0]
    try:
        out = torch.cat([torch.as_tensor(predict(xb)) for xb in ds.x_test.split(1000)])
    except Exception as exc:  # the program's own code: the run is kept, the note says why
        return {"test_accuracy_note": f"{name}(x) failed: {type(exc).__name__}: {first_line(exc)}"}
    if out.dim() == 2 and out.shape[0] == n:
        predicted = out.argmax(-1)  # one-hot rows or per-class scores
    elif out.shape == (n,):
        predicted = out.long()
    else:
        return {
            "test_accuracy_note": f"{name}(x) gave shape {tuple(out.shape)} for {n} examples; "
            "expected class ids (N,) or one row per example (N, C)"
        }
    labelled = int((ds.y_train >= 0).sum()) if ds.y_train is not None else 0
    return {
        "test_accuracy": float((predicted.to(ds.y_test.device) == ds.y_test).float().mean()),
        "train_labels_used": labelled,
    }
