"""One generic trainer for any (model, guide) pair: SVI on the ELBO with one torch optimizer.

:func:`fit` takes any Pyro ``model``/``guide`` pair (a suite model's bound methods, a
Pyro-tutorial ``nn.Module``'s, two ``PyroModule`` objects, or plain functions with
``pyro.param``); :class:`~ppl_vae.programs.Programs` finds their parameters by tracing them
once. The loss is a Pyro ELBO as an ``nn.Module`` (:class:`ppl_vae.infer.objective.Objective`),
divided by the minibatch size so the reported figure is the mean per-example negative
ELBO in nats. Each step draws a ``randperm`` slice of the preloaded training tensor (and
its labels, when the programs take ``(x, y)``), evaluates the beta schedule at the global
step, lets the objective update its own per-step state (:class:`~ppl_vae.infer.objective.
StepwiseELBO`: the capacity target, the TC weight) and scales the latent sites of both
programs by the beta it returns. The running loss stays on the device and is read once per
:data:`LOG_EVERY` steps (progress bar and NaN check). After each epoch the pair is scored
into one :func:`~ppl_vae.measure.metrics.epoch_record`.

Full-batch programs may train with L-BFGS (``optimizer="lbfgs"``, Nocedal & Wright 2006):
an epoch is one ``torch.optim.LBFGS.step`` of :data:`LBFGS_ITERATIONS` iterations with a
strong-Wolfe line search, every evaluation the same loss module with the same beta, its
random draws fixed for the whole run (:func:`closure_of`), so the objective is one
deterministic function. ``grad_tolerance`` stops a full-batch run once the gradient's norm
is that fraction of its norm before the first step (:func:`full_gradient`), a test that
a flat stretch of an ill-conditioned loss does not pass, unlike a small change of the loss.

:func:`fit` knows no files. It returns a :class:`FitResult` (the trained pair, the
optimizer, the per-epoch history, the seconds); persistence is a :class:`Checkpointer`
passed in -- the run layer's (:class:`ppl_vae.runs.checkpoint.RunCheckpointer`) writes a
run directory -- which :func:`fit` asks for a state to resume from and hands a record
every epoch and, with ``checkpoint_every=N``, every N steps inside an epoch, from which a
resumed fit continues exactly where it stopped: same weights, optimizer moments, random
streams and place in the epoch.

Example::

    >>> from ppl_vae import data
    >>> from ppl_vae.models.vae import VAE
    >>> ds = data.load("digits")
    >>> vae = VAE(ds.x_dim, latent_dim=2)
    >>> result = fit(vae.model, vae.guide, ds, TrainConfig(epochs=1, progress=False))
    >>> sorted(result.history[-1])[:3]
    ['active_units', 'best_epoch', 'beta']
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import pyro
import torch

from ppl_vae.data import labels
from ppl_vae.data.dataset import Dataset, shuffle_generator, validation_split
from ppl_vae.data.loaders import as_dataset
from ppl_vae.errors import UserError
from ppl_vae.infer import adam, distributed, schedules
from ppl_vae.infer.config import OBJECTIVES, TrainConfig
from ppl_vae.infer.objective import Objective
from ppl_vae.measure.metrics import STOP_REASONS, epoch_record
from ppl_vae.programs import Program, Programs, label_form, owner_of

LOG_EVERY = 50  # steps between reads of the running loss (progress bar, NaN check)
#: ``optimizer="lbfgs"``: iterations of one ``torch.optim.LBFGS.step`` (one epoch) and the
#: curvature pairs it keeps.
LBFGS_ITERATIONS, LBFGS_HISTORY = 20, 50


class Checkpointer(Protocol):
    """Where :func:`fit` keeps its state: ``restore`` gives the record to resume from (or
    None to start afresh), ``save`` keeps one (see :func:`checkpoint_record`)."""

    def restore(self, map_location: torch.device) -> dict[str, Any] | None: ...

    def save(self, record: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    """The record of a run: the trained :class:`~ppl_vae.programs.Programs` pair and the
    optimizer, per-epoch ``history`` (dicts with ``epoch``, ``step``, ``beta``,
    ``train_objective``, ``train_elbo``, ``test_elbo``, ``rate``, ``distortion``,
    ``kl_per_dim``, ``active_units``, ``test_recon_mse``), the global ``step``, the
    training ``seconds`` and how the loss ran (``jit``)."""

    pair: Programs
    optimizer: torch.optim.Optimizer | adam.Adam
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0
    #: How the loss ran: ``traced`` (:mod:`ppl_vae.infer.jit`); ``off`` (not asked, or ``off:
    #: <why>`` for an objective that cannot be traced); ``eager: <why the trace failed>``.
    jit: str = "off"
    #: The estimator trained with and how each latent site's KL was computed
    #: (:class:`~ppl_vae.infer.elbo.ELBOChoice`: ``elbo``, ``kl``, ``reason``).
    choice: Any = None
    #: ``--compile``: ``compiled`` (:mod:`ppl_vae.infer.compiled`), ``off`` (not asked, or
    #: ``off: <why>``), or ``fallback: <why>`` (the loss ran as without it).
    compile: str = "off"
    #: With early stopping, the best epoch so far: ``{"epoch", "value"`` (its validation
    #: ELBO) ``, "module"`` (its weights, a state dict kept in memory)``}``.
    best: dict[str, Any] | None = field(default=None, repr=False)
    #: With ``grad_tolerance``: the norm of the full-batch gradient before the first step,
    #: which the epochs' ``grad_norm`` is relative to.
    grad_start: float | None = None

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    @property
    def final(self) -> dict[str, Any]:
        """The record of the weights the result holds: the best epoch's (early stopping
        restored it), with the last record's ``stopped``; else the last record."""
        last = self.last
        best = last.get("best_epoch")
        if isinstance(best, int) and best != last.get("epoch") and 1 <= best <= len(self.history):
            return {**self.history[best - 1], "stopped": last["stopped"], "best_epoch": best}
        return last

    @property
    def final_step(self) -> int:
        """The optimizer step the held weights were trained to (:attr:`final`'s)."""
        last, final = self.last, self.final
        return final["step"] if last and final is not last else self.step


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}; use auto, cpu or cuda") from None


def schedule_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The run length the schedules span: ``schedule_epochs`` (or ``epochs``) epochs."""
    return (config.schedule_epochs or config.epochs) * steps_per_epoch


def beta_schedule(config: TrainConfig, steps_per_epoch: int):
    """The configured schedule as a pure function of the step."""
    return schedules.make(
        config.beta_schedule,
        beta=config.beta,
        warmup_steps=config.warmup_steps,
        total_steps=schedule_steps(config, steps_per_epoch),
        cycles=config.cycles,
    )


ADVICE = "lower --lr or check the data and likelihood"


def training_loss(loss_fn: torch.nn.Module, args: tuple, beta: float, step: int) -> torch.Tensor:
    """The mean per-example loss. A distribution that refuses its diverged parameters is a
    :class:`UserError` rather than a traceback; a non-finite loss is caught once per log
    interval from the device-side running sum (:func:`check_finite`), not here, so the hot
    loop never waits for the device."""
    try:
        return loss_fn(*args, beta=beta) / args[0].shape[0]
    except ValueError as exc:
        if "Expected parameter" not in str(exc) and "invalid values" not in str(exc):
            raise
        raise UserError(
            f"training diverged at step {step} (the loss became NaN); {ADVICE}"
        ) from None


def check_finite(running: torch.Tensor, first_step: int, last_step: int) -> float:
    """Read the running loss sum once; a non-finite value is a :class:`UserError`."""
    value = float(distributed.sum_across(running))  # every rank sees a NaN on any rank
    if not math.isfinite(value):
        raise UserError(
            f"the loss became {value} between steps {first_step} and {last_step}; {ADVICE}"
        )
    return value


def move_programs(model: Program, guide: Program, device: torch.device) -> None:
    """Move the modules the programs belong to onto ``device`` (before they are traced)."""
    for fn in (model, guide):
        owner = owner_of(fn)
        if owner is not None:
            owner.to(device)


def check_data(model: Program, guide: Program, data: Dataset) -> None:
    """The suite's models check the data against their likelihood (``check(x)``); a user's
    program is checked by running it (:class:`~ppl_vae.programs.Programs`)."""
    for fn in (model, guide):
        check = getattr(owner_of(fn), "check", None)
        if callable(check):
            check(data.x_train)
            check(data.x_test)
            return


def init_from_data(model: Program, guide: Program, data: Dataset) -> None:
    """A module that defines ``init_from_data(x)`` sees the training rows once before the
    first step (the suite's ppca takes its centre and scale from them); a resumed run's
    checkpoint then replaces whatever it set."""
    for fn in (model, guide):
        init = getattr(owner_of(fn), "init_from_data", None)
        if callable(init):
            with torch.no_grad():
                init(data.x_train)
            return


def make_objective(pair: Programs, config: TrainConfig, dataset_size: int = 1) -> Objective:
    """The configured loss module: the objective named in ``config`` (its ELBO built by
    the ``from_config`` that :data:`~ppl_vae.infer.config.OBJECTIVES` names), traced
    (``config.jit``) and compiled (``config.compile``) where the objective allows it
    (``traceable``)."""
    from ppl_vae.infer.elbo import TraceMeanField_ELBO, choose

    choice = choose(pair, config)  # --elbo auto resolved from the pair's trace
    if config.objective == "elbo" and config.elbo != choice.elbo:
        config = replace(config, elbo=choice.elbo)
    module, _, name = OBJECTIVES[config.objective].partition(":")
    build = getattr(importlib.import_module(module), name)
    elbo = build(config, max(1, pair.max_plate_nesting), dataset_size)
    if isinstance(elbo, TraceMeanField_ELBO):
        elbo.analytic_sites = frozenset(n for n, k in choice.kl.items() if k == "analytic")
    traceable = getattr(elbo, "traceable", True)
    objective = Objective(
        pair, elbo, jit=config.jit and traceable, compile=config.compile and traceable
    )
    objective.choice = choice
    return objective


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer | adam.Adam:
    """The trainer's optimizer. Adam: ``torch.optim.Adam(fused=True)`` on CUDA; elsewhere
    :class:`ppl_vae.infer.adam.Adam`, the multi-tensor (``foreach``) update of
    ``torch.optim.Adam`` bit for bit, which spares a run the import of ``torch._dynamo``
    that every ``torch.optim`` optimizer makes (~1.6 s of CPU). ``lbfgs``: torch's L-BFGS
    with a strong-Wolfe line search (Nocedal & Wright 2006, alg. 7.5 and 3.5),
    :data:`LBFGS_ITERATIONS` iterations per step; its own stopping tests are off but for a
    loss that no longer changes at all (the trainer's ``grad_tolerance`` decides)."""
    params = list(params)
    if config.optimizer == "lbfgs":
        return torch.optim.LBFGS(
            params,
            lr=config.lr,
            max_iter=LBFGS_ITERATIONS,
            history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=1e-12,
        )
    if params and all(p.is_cuda and p.is_floating_point() for p in params):
        return torch.optim.Adam(params, lr=config.lr, fused=True)
    return adam.Adam(params, lr=config.lr)


def check_optimizer(config: TrainConfig, data: Dataset) -> None:
    """What :meth:`TrainConfig.validate` cannot see: L-BFGS and ``grad_tolerance`` need the
    whole training set in every step (a fixed objective, an exact gradient), and L-BFGS
    the same rows at every step (no dynamic binarisation) in one process."""
    n = data.x_train.shape[0]
    for wanted, name in (
        (config.optimizer == "lbfgs", "--optimizer lbfgs"),
        (config.grad_tolerance > 0, "--grad-tolerance"),
    ):
        if wanted and config.batch_size < n:
            raise UserError(
                f"{name} needs full-batch training: --batch-size {config.batch_size} is less "
                f"than the {n} training rows; give --batch-size {n} or more"
            )
    if config.optimizer == "lbfgs" and data.binarize == "dynamic":
        raise UserError(
            "--optimizer lbfgs needs the same training rows at every step; --binarize dynamic "
            "draws new ones each epoch: use adam or a static binarisation"
        )
    if config.optimizer == "lbfgs" and distributed.active():
        raise UserError("--optimizer lbfgs runs in one process; run it without torchrun")


@contextlib.contextmanager
def fixed_noise(seed: int, device: torch.device):
    """The programs' random draws made the same at every call (common random numbers):
    the global generator reseeded inside, put back as it was outside."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def closure_of(
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    args: tuple,
    beta: float,
    step: int,
    seed: int,
) -> Callable[[], torch.Tensor]:
    """The full-batch loss and its gradient as L-BFGS evaluates them: the same draws at
    every evaluation (:func:`fixed_noise`), so the objective is a deterministic function of
    the parameters (a sample-average approximation for a stochastic guide). A trial point
    of the line search where the loss is not finite, or where a distribution refuses its
    parameters, scores ``inf``: the line search then bisects back towards the last good
    point (a loss that is not finite where training stands is caught by :func:`fit`)."""
    device = args[0].device

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with fixed_noise(seed, device):
            try:
                loss = training_loss(loss_fn, args, beta, step)
            except UserError:
                return torch.full((), math.inf, device=device)
        if not torch.isfinite(loss):  # L-BFGS reads every loss to the host anyway
            return torch.full((), math.inf, device=device)
        loss.backward()
        return loss.detach()

    return closure


def gradient_norm(params) -> float:
    """The Euclidean norm of the gradient held in ``params``' ``.grad``."""
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def train_step(
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer | adam.Adam,
    args: tuple,
    beta: float,
    step: int,
    seed: int = 0,
) -> torch.Tensor:
    """One optimizer step on one batch, as :func:`fit` runs it (and ``ppl-vae bench``
    times it); returns the detached mean loss, left on the device. L-BFGS takes its
    :data:`LBFGS_ITERATIONS` iterations on the loss with draws fixed by ``seed``
    (:func:`closure_of`) and returns the loss it started from."""
    if isinstance(optimizer, torch.optim.LBFGS):
        return optimizer.step(closure_of(loss_fn, optimizer, args, beta, step, seed))
    loss = training_loss(loss_fn, args, beta, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def fit(
    model: Program | Programs,
    guide: Program | None,
    data: Dataset,
    config: TrainConfig | None = None,
    checkpointer: Checkpointer | None = None,
    on_epoch: Callable[[dict[str, Any], FitResult], None] | None = None,
) -> FitResult:
    """Train the Pyro program pair ``model``/``guide`` on ``data``; see the module docstring.

    ``model`` and ``guide`` are any Pyro programs taking ``(x)`` or ``(x, y)``; a
    :class:`~ppl_vae.programs.Programs` pair may be passed as ``model`` with ``guide=None``.
    Without ``config`` the programs' own recommended settings (``train_defaults`` on the
    module they belong to) apply over :class:`TrainConfig`'s defaults. A ``config`` you
    pass is taken as is: every field is yours, the recommended settings are not merged
    in (``TrainConfig(epochs=2)`` trains a model that recommends ``elbo="enum"`` with
    ``Trace_ELBO``). To keep them and change some settings, pass
    :func:`recommended_config` (``recommended_config(model, guide, epochs=2)``, the same as
    ``TrainConfig.from_dict({**recommended(model, guide), "epochs": 2})``): your settings
    win over the recommended ones, as the command line's flags do. A config is checked
    here unless the caller checked it already (:meth:`TrainConfig.validate`).
    ``checkpointer`` keeps the state between runs (see :class:`Checkpointer`);
    ``on_epoch(record, result)`` is called with each new epoch record once it is
    checkpointed (live monitoring: the run layer's writers; rank 0 decides what to write).
    """
    if isinstance(model, Programs):
        model, guide, pair = model.model, model.guide, model
    else:
        pair = None
    if config is None:
        config = TrainConfig.from_dict(recommended(model, guide))
    config.validate()  # a no-op for a config the job checked already
    data = as_dataset(data)  # a dict of arrays, a torch Dataset per split: named arrays
    device = distributed.local_device(resolve_device(config.device))
    pyro.set_rng_seed(config.seed)
    move_programs(model, guide, device)
    data = data.to(device)
    check_data(model, guide, data)
    validation = None
    if config.early_stopping:  # a fixed slice of the training rows, never the test set
        data, validation = validation_split(data)
    check_optimizer(config, data)
    init_from_data(model, guide, data)
    if pair is None:
        pair = Programs(model, guide, example_batch(data, model, guide))
    pair.to(device)
    objective = make_objective(pair, config, data.x_train.shape[0])
    elbo = objective.elbo  # it owns its per-step state (StepwiseELBO), if any
    at_step = getattr(elbo, "at_step", None)
    loss_fn = distributed.wrap(objective, pair.args(*example_batch(data, model, guide)))
    optimizer = make_optimizer(pair.parameters(), config)
    shuffle = shuffle_generator(config.seed, device)
    result = FitResult(pair, optimizer, config, choice=objective.choice)
    n = data.x_train.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = beta_schedule(config, steps_per_epoch)
    total_steps = schedule_steps(config, steps_per_epoch)
    plan = labels.EpochPlan(pair, data.y_train, n, config.batch_size)  # (x, y) or (x,)
    every = config.checkpoint_every if checkpointer is not None else 0
    # A mid-epoch checkpoint holds the shuffle generator as it was at the start of its
    # epoch, the steps taken in that epoch and the running loss: the epoch's permutation
    # (and dynamic binarisation) are drawn again and the steps already taken are skipped.
    position, resumed_running = 0, None
    state = checkpointer.restore(device) if checkpointer is not None else None
    if state is not None:
        position, resumed_running = restore(result, shuffle, state, device)

    start_epoch = len(result.history)
    if result.last.get("stopped") not in (None, STOP_REASONS[0]):
        start_epoch = config.epochs  # converged or stopped early: a resume trains no more
    elif start_epoch < config.epochs and result.history:
        result.last["stopped"] = None  # resumed with more epochs: it goes on after all
    bar = distributed.progress(
        config.progress,
        total=max(0, (config.epochs - start_epoch) * steps_per_epoch - position),
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        with pair.scope():
            for _ in range(start_epoch, config.epochs):
                t0 = time.perf_counter()
                pair.train()
                distributed.seed_epoch(config.seed, len(result.history))
                epoch_shuffle = shuffle.get_state()
                x_epoch = data.train_epoch(shuffle)
                running = torch.zeros((), device=device)
                first, beta, since = result.step, config.beta, 0
                skip, position = position, 0
                if skip:  # resumed from a mid-epoch checkpoint
                    running = resumed_running.reshape(()).to(device)
                    first = result.step - skip
                for i, idx in distributed.shard(plan.batches(shuffle, device=device), loss_fn):
                    if i < skip:
                        continue
                    args = plan.args(i, x_epoch, idx)
                    if config.grad_tolerance > 0 and result.grad_start is None:
                        result.grad_start = (
                            full_gradient(loss_fn, optimizer, args, config.beta, 0, config.seed)
                            or 1.0
                        )
                    beta = schedule(result.step)
                    for group in optimizer.param_groups:
                        group["lr"] = schedules.learning_rate(
                            result.step, config.lr, total_steps, config.lr_schedule, config.lr_final
                        )
                    scale = at_step(result.step, beta) if at_step is not None else beta
                    loss = train_step(loss_fn, optimizer, args, scale, result.step, config.seed)
                    result.step += 1
                    running += loss * args[0].shape[0]
                    since += 1
                    bar.update(1)
                    if since == LOG_EVERY:  # one host read per log interval
                        since = 0
                        total = check_finite(running, first, result.step)
                        bar.set_postfix(elbo=f"{-total / n:.2f}", beta=f"{beta:.3g}", refresh=False)
                    if every and result.step % every == 0 and i + 1 < steps_per_epoch:
                        now = time.perf_counter()  # (the epoch's end saves anyway)
                        result.seconds, t0 = result.seconds + now - t0, now
                        checkpointer.save(checkpoint_record(result, epoch_shuffle, i + 1, running))
                total = check_finite(running, first, result.step)
                result.seconds += time.perf_counter() - t0
                if not all(torch.isfinite(p).all() for p in pair.parameters()):
                    raise UserError(
                        f"training diverged in epoch {len(result.history) + 1}; lower --lr"
                    )
                epoch = len(result.history) + 1
                record = epoch_record(pair, data, config, epoch, result.step, validation)
                record.update(beta=beta, train_objective=total / n)
                if config.grad_tolerance > 0:
                    now = full_gradient(loss_fn, optimizer, args, scale, result.step, config.seed)
                    record["grad_norm"] = now / result.grad_start
                if hasattr(elbo, "epoch_state"):
                    record.update(elbo.epoch_state(result.step))
                record.update(stopping(result, record, config))
                result.history.append(record)
                bar.set_postfix(test_elbo=f"{result.last['test_elbo']:.2f}", beta=f"{beta:.3g}")
                if checkpointer is not None:
                    checkpointer.save(checkpoint_record(result, shuffle.get_state()))
                if on_epoch is not None:
                    on_epoch(record, result)
                if record["stopped"] is not None:
                    break
    finally:
        bar.close()
    if result.best is not None and result.best["epoch"] != result.last.get("epoch"):
        restore_best(result, checkpointer, shuffle)
    distributed.check_in_sync(pair)
    result.jit = jit_status(config, loss_fn.traced)
    result.compile = compile_status(config, objective.compiled)
    return result


def full_gradient(
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    args: tuple,
    beta: float,
    step: int,
    seed: int,
) -> float:
    """The norm of the full-batch gradient at the weights held now: one evaluation of the
    fixed-draw objective (:func:`closure_of`), the global random stream left as it was.
    Weights where the loss is not finite are a :class:`UserError`, never a zero gradient."""
    if not math.isfinite(float(closure_of(loss_fn, optimizer, args, beta, step, seed)())):
        raise UserError(f"training diverged by step {step} (the loss became NaN); {ADVICE}")
    return gradient_norm(optimizer.param_groups[0]["params"])


def stopping(result: FitResult, record: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """``stopped`` and ``best_epoch`` of a new epoch ``record`` (see
    :data:`~ppl_vae.measure.metrics.STOP_REASONS`); keeps the best weights in
    ``result.best`` when early stopping. Everything it reads is in the history or in
    ``result.best``, which the checkpoint carries, so a resumed run stops where an
    uninterrupted one does."""
    epoch, reason = record["epoch"], None
    if config.early_stopping:
        value = record["val_elbo"]
        if result.best is None or value > result.best["value"]:
            state = result.pair.state_dict()
            result.best = {
                "epoch": epoch,
                "value": value,
                "module": {k: v.detach().clone() for k, v in state.items()},
            }
        if epoch - result.best["epoch"] >= config.patience:
            reason = STOP_REASONS[2].format(patience=config.patience)
    if config.tolerance > 0 and reason is None:
        losses = [r["train_objective"] for r in result.history[-config.patience :]]
        losses.append(record["train_objective"])
        changes = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, losses[1:])]
        if len(changes) == config.patience and max(changes) < config.tolerance:
            reason = STOP_REASONS[1]
    size = record.get("grad_norm")
    if reason is None and size is not None and size <= config.grad_tolerance:
        reason = STOP_REASONS[1]
    if reason is None and epoch >= config.epochs:
        reason = STOP_REASONS[0]
    best = result.best["epoch"] if result.best is not None else epoch
    return {"stopped": reason, "best_epoch": best}


def restore_best(
    result: FitResult, checkpointer: Checkpointer | None, shuffle: torch.Generator
) -> None:
    """Put the best epoch's weights back in the pair. The checkpoint then holds them as
    its ``module`` (what a run presents) and the last weights as ``train_module`` (what a
    resumed run with more epochs trains on from)."""
    last = {k: v.detach().clone() for k, v in result.pair.state_dict().items()}
    result.pair.load_state_dict(result.best["module"])
    if checkpointer is not None:
        record = checkpoint_record(result, shuffle.get_state())
        record["train_module"] = last
        checkpointer.save(record)


def restore(result: FitResult, shuffle: torch.Generator, state: dict, device) -> tuple:
    """Put a :func:`checkpoint_record` back: weights, optimizer, history, random streams.
    Returns the position in the epoch and the epoch's running loss (for a mid-epoch one)."""
    try:
        result.pair.load_state_dict(state.get("train_module", state["module"]))
        result.optimizer.load_state_dict(state["optimizer"])
        result.best = state.get("best")
        result.history, result.step = state["history"], state["step"]
        result.seconds = state["seconds"]
        result.grad_start = state.get("grad_start")
        position = int(state.get("position", 0))
        running = distributed.main_share(state.get("running"))
        shuffle.set_state(state["rng"]["shuffle"])
        torch.set_rng_state(state["rng"]["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"the checkpoint does not fit this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}); resume with the run's own options"
        ) from None
    if device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return position, running


def jit_status(config: TrainConfig, traced) -> str:
    """``traced``, ``off[: why]`` or ``eager: <why>`` (see :attr:`FitResult.jit`)."""
    if not config.jit:
        return "off"
    if traced is None:
        return f"off: the {config.objective} objective changes its settings every step"
    return "traced" if traced.reason is None else f"eager: {traced.reason}"


def compile_status(config: TrainConfig, compiled) -> str:
    """``compiled``, ``off[: why]`` or ``fallback: <why>`` (see :attr:`FitResult.compile`)."""
    if not config.compile:
        return "off"
    if compiled is None:
        return f"off: the {config.objective} objective changes its settings every step"
    if compiled.reason is not None:
        return f"fallback: {compiled.reason}"
    if not compiled.checked:
        return "fallback: no full batch came twice (the compiled loss is checked on the second)"
    return "compiled"


def example_batch(data: Dataset, model: Program | None = None, guide: Program | None = None):
    """Two training examples (and their labels, in the form the programs declare) for the
    programs' first trace, as scored (a binary draw under dynamic binarisation)."""
    form = label_form(model, guide) if model is not None else "ids"
    n = data.x_train.shape[0] if data.y_train is not None and form != "ids" else 2
    if data.named:  # programs of named arrays may size their plates by the batch (LDA)
        n = data.x_train.shape[0]
    return labels.first_batch(form, data.scored_train(n), data.y_train)


def recommended(model: Program | Programs, guide: Program | None = None) -> dict[str, Any]:
    """The training settings the programs' module recommends (``train_defaults``); a
    :class:`~ppl_vae.programs.Programs` pair may be passed as ``model``."""
    if isinstance(model, Programs):
        model, guide = model.model, model.guide
    out: dict[str, Any] = {}
    for fn in (model, guide):
        out.update(getattr(owner_of(fn), "train_defaults", {}) or {})
    return out


#: The settings a full-batch optimizer comes with: a recommended L-BFGS brings them all or
#: none (its lr of 1 would make Adam diverge; the gradient test needs the whole batch).
FULL_BATCH_SETTINGS = ("optimizer", "lr", "grad_tolerance", "num_particles")


def yielding(recommendation: dict[str, Any], yours: Iterable[str]) -> dict[str, Any]:
    """``recommendation`` less what your settings rule out: a batch size you chose (and no
    optimizer) means minibatches, so a recommended L-BFGS yields to the default Adam
    together with its :data:`FULL_BATCH_SETTINGS` (``ppl-vae train pca --batch-size 64``
    trains pca with Adam, not an error).

    Example::

        >>> yielding({"optimizer": "lbfgs", "lr": 1.0, "epochs": 20}, ["batch_size"])
        {'epochs': 20}
    """
    yours = set(yours)
    if recommendation.get("optimizer") != "lbfgs" or "optimizer" in yours:
        return dict(recommendation)
    if "batch_size" not in yours:
        return dict(recommendation)
    drop = {*FULL_BATCH_SETTINGS, "batch_size"}
    return {k: v for k, v in recommendation.items() if k not in drop}


def recommended_config(
    model: Program | Programs, guide: Program | None = None, **settings: Any
) -> TrainConfig:
    """The config :func:`fit` uses without one -- the programs' recommended settings
    (:func:`recommended`) over :class:`TrainConfig`'s defaults -- with ``settings`` over
    both: ``fit(m, g, ds, recommended_config(m, g, epochs=30))``. A setting that is no
    field of :class:`TrainConfig` is a ``TypeError``, as in ``TrainConfig(...)``."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise TypeError(f"TrainConfig has no setting {', '.join(map(repr, unknown))}")
    return TrainConfig.from_dict({**yielding(recommended(model, guide), settings), **settings})


def checkpoint_record(
    result: FitResult,
    shuffle_state: torch.Tensor,
    position: int = 0,
    running: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Everything :func:`fit` needs to continue bit for bit: weights, optimizer moments,
    history and the random streams (all uint8 or float tensors, no pickles). At an epoch's
    end ``shuffle_state`` is the generator's state for the next epoch and ``position`` 0;
    inside an epoch it is the state the epoch started from, ``position`` the steps taken in
    it and ``running`` the epoch's running loss sum."""
    rng = {"torch": torch.get_rng_state(), "shuffle": shuffle_state}
    if torch.cuda.is_available() and result.pair.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state()
    record = {
        "step": result.step,
        "epoch": len(result.history),
        "position": position,
        "seconds": result.seconds,
        "history": result.history,
        "module": result.pair.state_dict(),
        "optimizer": result.optimizer.state_dict(),
        "rng": rng,
    }
    if result.best is not None:
        record["best"] = result.best
    if result.grad_start is not None:
        record["grad_start"] = result.grad_start
    if running is not None:
        record["running"] = distributed.sum_across(running).detach().reshape(1)
    return record
