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
an epoch is one ``torch.optim.LBFGS.step`` of
:data:`~ppl_vae.infer.optim.LBFGS_ITERATIONS` iterations with a
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
streams and place in the epoch. All of that is one value, the result's
:class:`~ppl_vae.infer.state.TrainState`, whose ``to_record``/``from_record`` are the save
and the restore. :func:`fit` reads as :func:`start` (config, data, pair, objective,
optimizer, resumed state), :func:`run_epochs` (each epoch's steps, then its record and the
stopping decision of :mod:`ppl_vae.infer.stopping`) and :func:`end`.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import pyro
import torch

from ppl_vae.data import labels
from ppl_vae.data.dataset import Dataset, shuffle_generator, validation_split
from ppl_vae.data.loaders import as_dataset
from ppl_vae.errors import UserError
from ppl_vae.infer import adam, distributed, schedules
from ppl_vae.infer.config import OBJECTIVES, TrainConfig
from ppl_vae.infer.objective import Objective, StepwiseELBO
from ppl_vae.infer.optim import check_optimizer, make_optimizer, set_learning_rate
from ppl_vae.infer.recommend import recommended
from ppl_vae.infer.state import TrainState, does_not_fit, rng_states, set_rng_states
from ppl_vae.infer.stopping import StopReason, stopping
from ppl_vae.measure.metrics import epoch_record
from ppl_vae.programs import Program, Programs, label_form, owner_of

LOG_EVERY = 50  # steps between reads of the running loss (progress bar, NaN check)


class Checkpointer(Protocol):
    """Where :func:`fit` keeps its state: ``restore`` gives the record to resume from (or
    None to start afresh), ``save`` keeps one (see :func:`checkpoint_record`)."""

    def restore(self, map_location: torch.device) -> dict[str, Any] | None: ...

    def save(self, record: dict[str, Any]) -> None: ...


def _state_field(name: str) -> property:
    """``result.<name>``: the field of the result's :class:`TrainState`, read and set."""

    def get(self: FitResult) -> Any:
        return getattr(self.state, name)

    def put(self: FitResult, value: Any) -> None:
        setattr(self.state, name, value)

    return property(get, put, doc=f"The state's ``{name}``.")


@dataclass
class FitResult:
    """The record of a run: the trained :class:`~ppl_vae.programs.Programs` pair and the
    optimizer, the loop's :class:`~ppl_vae.infer.state.TrainState` (its per-epoch
    ``history``, dicts with ``epoch``, ``step``, ``beta``, ``train_objective``,
    ``train_elbo``, ``test_elbo``, ``rate``, ``distortion``, ``kl_per_dim``,
    ``active_units``, ``test_recon_mse``; the global ``step``; the training ``seconds``;
    ``best`` and ``grad_start``, read here as attributes) and how the loss ran (``jit``)."""

    pair: Programs
    optimizer: torch.optim.Optimizer | adam.Adam
    config: TrainConfig
    #: The loop's state, the one value a checkpoint saves and a resume restores.
    state: TrainState = field(default_factory=TrainState)
    #: How the loss ran: ``traced`` (:mod:`ppl_vae.infer.jit`); ``off`` (not asked, or ``off:
    #: <why>`` for an objective that cannot be traced); ``eager: <why the trace failed>``.
    jit: str = "off"
    #: The estimator trained with and how each latent site's KL was computed
    #: (:class:`~ppl_vae.infer.elbo.ELBOChoice`: ``elbo``, ``kl``, ``reason``).
    choice: Any = None
    #: ``--compile``: ``compiled`` (:mod:`ppl_vae.infer.compiled`), ``off`` (not asked, or
    #: ``off: <why>``), or ``fallback: <why>`` (the loss ran as without it).
    compile: str = "off"
    #: The objective's ELBO: its own state (:meth:`StepwiseELBO.state_dict`) is checkpointed.
    elbo: Any = field(default=None, repr=False)

    history = _state_field("history")
    step = _state_field("step")
    seconds = _state_field("seconds")
    #: With early stopping, the best epoch so far: ``{"epoch", "value"`` (its validation
    #: ELBO) ``, "module"`` (its weights, a state dict kept in memory)``}``.
    best = _state_field("best")
    #: With ``grad_tolerance``: the norm of the full-batch gradient before the first step,
    #: which the epochs' ``grad_norm`` is relative to.
    grad_start = _state_field("grad_start")

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


def refit_after_epoch(pair: Programs, data: Dataset) -> None:
    """A module that defines ``refit_after_epoch(x)`` sees the training rows (as scored:
    one fixed draw under dynamic binarisation) after each epoch's steps, before the epoch
    is scored and checkpointed (the suite's vq-vae refits its post-hoc code prior there)."""
    for fn in (pair.model, pair.guide):
        refit = getattr(owner_of(fn), "refit_after_epoch", None)
        if callable(refit):
            with torch.no_grad():
                refit(data.scored_train())
            return


def make_objective(pair: Programs, config: TrainConfig, dataset_size: int = 1) -> Objective:
    """The configured loss module: the objective named in ``config`` (its ELBO built by
    the ``from_config`` that :data:`~ppl_vae.infer.config.OBJECTIVES` names), traced
    (``config.jit``) and compiled (``config.compile``) where the objective allows it
    (``traceable``)."""
    from ppl_vae.infer.elbo import choose

    choice = choose(pair, config)  # --elbo auto resolved from the pair's trace
    if config.objective == "elbo" and config.elbo != choice.elbo:
        config = replace(config, elbo=choice.elbo)
    module, _, name = OBJECTIVES[config.objective].partition(":")
    build = getattr(importlib.import_module(module), name)
    elbo = build(config, max(1, pair.max_plate_nesting), dataset_size)
    if hasattr(elbo, "analytic_sites"):  # TraceMeanField_ELBO, the capacity objective
        elbo.analytic_sites = frozenset(n for n, k in choice.kl.items() if k == "analytic")
    traceable = getattr(elbo, "traceable", True)
    objective = Objective(
        pair, elbo, jit=config.jit and traceable, compile=config.compile and traceable
    )
    objective.choice = choice
    return objective


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
    :data:`~ppl_vae.infer.optim.LBFGS_ITERATIONS` iterations on the loss with draws fixed by
    ``seed`` (:func:`closure_of`) and returns the loss it started from."""
    if isinstance(optimizer, torch.optim.LBFGS):
        return optimizer.step(closure_of(loss_fn, optimizer, args, beta, step, seed))
    loss = training_loss(loss_fn, args, beta, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@dataclass
class Loop:
    """What :func:`start` builds for one fit and the epochs read; fixed for the run (the
    changing part is the result's :class:`~ppl_vae.infer.state.TrainState`)."""

    pair: Programs
    data: Dataset
    #: The validation rows ``(x, y)`` of early stopping, else None.
    validation: tuple | None
    config: TrainConfig
    device: torch.device
    objective: Objective
    #: The objective as the steps call it (wrapped by DDP under torchrun).
    loss_fn: torch.nn.Module
    #: The generator of the epochs' permutations and dynamic binarisation.
    shuffle: torch.Generator
    plan: labels.EpochPlan
    steps_per_epoch: int
    schedule: Callable[[int], float]
    total_steps: int
    checkpointer: Checkpointer | None = None
    on_epoch: Callable[[dict[str, Any], FitResult], None] | None = None

    @property
    def n(self) -> int:
        return self.data.x_train.shape[0]

    @property
    def every(self) -> int:
        """Steps between mid-epoch checkpoints (0: none)."""
        return self.config.checkpoint_every if self.checkpointer is not None else 0


@dataclass
class EpochRun:
    """One epoch's working values, read by its steps, its checkpoints and its end."""

    #: The shuffle generator's state as the epoch began (what a mid-epoch checkpoint keeps).
    shuffle_state: torch.Tensor
    #: The epoch's training inputs (a fresh binary draw under dynamic binarisation).
    x: torch.Tensor
    #: When the stretch of training time not yet added to the state's seconds began.
    t0: float
    #: The first step of the epoch (named by a non-finite loss's error).
    first: int
    beta: float
    #: The last step's beta as the objective took it, and its batch's arguments.
    scale: Any = None
    args: tuple = ()
    #: Steps since the running loss was last read.
    since: int = 0


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
    loop, result = start(model, guide, data, config, checkpointer, on_epoch)
    run_epochs(loop, result)
    return end(loop, result)


def start(
    model: Program | Programs,
    guide: Program | None,
    data: Dataset,
    config: TrainConfig | None,
    checkpointer: Checkpointer | None,
    on_epoch: Callable[[dict[str, Any], FitResult], None] | None,
) -> tuple[Loop, FitResult]:
    """Everything before the first step: the config, device and seed, the data, the pair,
    its objective and optimizer, and the state a checkpointer resumes from."""
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
    data, validation = prepare_data(model, guide, data, config, device)
    if pair is None:
        first = example_batch(data, model, guide, config.batch_size)  # a real batch
        pair = Programs(model, guide, example_batch(data, model, guide), batch=first)
    pair.to(device)
    loop, result = build_loop(model, guide, pair, data, validation, config, device)
    loop.checkpointer, loop.on_epoch = checkpointer, on_epoch
    record = checkpointer.restore(device) if checkpointer is not None else None
    if record is not None:
        restore(result, loop.shuffle, record, device)
    return loop, result


def build_loop(
    model: Program,
    guide: Program,
    pair: Programs,
    data: Dataset,
    validation: tuple | None,
    config: TrainConfig,
    device: torch.device,
) -> tuple[Loop, FitResult]:
    """The pair's objective (wrapped for DDP), its optimizer, the shuffle generator, the
    schedules over the run's steps and the epochs' plan; a result with a fresh state."""
    objective = make_objective(pair, config, data.x_train.shape[0])
    loss_fn = distributed.wrap(objective, pair.args(*example_batch(data, model, guide)))
    optimizer = make_optimizer(pair.parameters(), config)
    shuffle = shuffle_generator(config.seed, device)
    result = FitResult(pair, optimizer, config, choice=objective.choice, elbo=objective.elbo)
    n = data.x_train.shape[0]
    steps = math.ceil(n / config.batch_size)
    loop = Loop(
        pair=pair,
        data=data,
        validation=validation,
        config=config,
        device=device,
        objective=objective,
        loss_fn=loss_fn,
        shuffle=shuffle,
        plan=labels.EpochPlan(pair, data.y_train, n, config.batch_size),  # (x, y) or (x,)
        steps_per_epoch=steps,
        schedule=beta_schedule(config, steps),
        total_steps=schedule_steps(config, steps),
    )
    return loop, result


def prepare_data(
    model: Program, guide: Program, data: Dataset, config: TrainConfig, device: torch.device
) -> tuple[Dataset, tuple | None]:
    """The programs' modules and the data on ``device``, the data checked, the validation
    rows of early stopping held out (a fixed slice of the training rows, never the test
    set), and the programs initialised from the rows they train on."""
    move_programs(model, guide, device)
    data = data.to(device)
    check_data(model, guide, data)
    validation = None
    if config.early_stopping:
        data, validation = validation_split(data)
    check_optimizer(config, data)
    init_from_data(model, guide, data)
    return data, validation


def first_epoch(result: FitResult, config: TrainConfig) -> int:
    """The epoch a (resumed) run starts from: none left once it converged or stopped early;
    a run that ran out of epochs and is given more goes on after all."""
    if StopReason.ends_training(result.last.get("stopped")):
        return config.epochs
    if result.state.epoch < config.epochs and result.history:
        result.last["stopped"] = None
    return result.state.epoch


def run_epochs(loop: Loop, result: FitResult) -> None:
    """The epochs left, under one progress bar, until one's record says ``stopped``."""
    config, first = loop.config, first_epoch(result, loop.config)
    bar = distributed.progress(
        config.progress,
        total=max(0, (config.epochs - first) * loop.steps_per_epoch - result.state.position),
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        with loop.pair.scope():
            for _ in range(first, config.epochs):
                if run_epoch(loop, result, bar)["stopped"] is not None:
                    break
    finally:
        bar.close()


def run_epoch(loop: Loop, result: FitResult, bar: Any) -> dict[str, Any]:
    """One epoch: its steps, then its record. A mid-epoch checkpoint holds the shuffle
    generator as it was at the start of its epoch, the steps taken in that epoch and the
    running loss: the epoch's permutation (and dynamic binarisation) are drawn again and
    the steps already taken are skipped."""
    state, t0 = result.state, time.perf_counter()
    loop.pair.train()
    distributed.seed_epoch(loop.config.seed, state.epoch)
    shuffle_state = loop.shuffle.get_state()
    x = loop.data.train_epoch(loop.shuffle)
    epoch = EpochRun(shuffle_state, x, t0, first=state.step - state.position, beta=loop.config.beta)
    if state.position:  # resumed from a mid-epoch checkpoint
        state.running = state.running.reshape(()).to(loop.device)
    else:
        state.running = torch.zeros((), device=loop.device)
    skip = state.position
    batches = loop.plan.batches(loop.shuffle, device=loop.device)
    for i, idx in distributed.shard(batches, loop.loss_fn):
        if i >= skip:
            take_step(loop, result, epoch, loop.plan.args(i, epoch.x, idx))
            after_step(loop, result, epoch, i, bar)
    return finish_epoch(loop, result, epoch, bar)


def take_step(loop: Loop, result: FitResult, epoch: EpochRun, args: tuple) -> None:
    """One optimizer step on one batch's ``args``: beta, the learning rate and the
    objective's own settings at the global step; the loss added to the running sum."""
    config, state = loop.config, result.state
    epoch.args = args
    if config.grad_tolerance > 0 and state.grad_start is None:
        start = full_gradient(loop.loss_fn, result.optimizer, args, config.beta, 0, config.seed)
        state.grad_start = start or 1.0
    epoch.beta = loop.schedule(state.step)
    set_learning_rate(result.optimizer, config, state.step, loop.total_steps)
    at_step = getattr(loop.objective.elbo, "at_step", None)  # a StepwiseELBO's state
    epoch.scale = at_step(state.step, epoch.beta) if at_step is not None else epoch.beta
    loss = train_step(loop.loss_fn, result.optimizer, args, epoch.scale, state.step, config.seed)
    state.step += 1
    state.running += loss * args[0].shape[0]


def after_step(loop: Loop, result: FitResult, epoch: EpochRun, i: int, bar: Any) -> None:
    """After global batch ``i``: the place in the epoch, one host read of the running loss
    per :data:`LOG_EVERY` steps, a checkpoint every ``checkpoint_every`` steps (not at the
    epoch's last, whose end saves anyway)."""
    state = result.state
    state.position = i + 1
    epoch.since += 1
    bar.update(1)
    if epoch.since == LOG_EVERY:
        epoch.since = 0
        total = check_finite(state.running, epoch.first, state.step)
        bar.set_postfix(elbo=f"{-total / loop.n:.2f}", beta=f"{epoch.beta:.3g}", refresh=False)
    if loop.every and state.step % loop.every == 0 and i + 1 < loop.steps_per_epoch:
        now = time.perf_counter()
        state.seconds, epoch.t0 = state.seconds + now - epoch.t0, now
        loop.checkpointer.save(checkpoint_record(result, epoch.shuffle_state))


def finish_epoch(loop: Loop, result: FitResult, epoch: EpochRun, bar: Any) -> dict[str, Any]:
    """The epoch's end: the loss checked, the pair scored into one record, the stopping
    decision, the checkpoint, then ``on_epoch``."""
    config, state = loop.config, result.state
    total = check_finite(state.running, epoch.first, state.step)
    state.seconds += time.perf_counter() - epoch.t0
    if not all(torch.isfinite(p).all() for p in loop.pair.parameters()):
        raise UserError(f"training diverged in epoch {state.epoch + 1}; lower --lr")
    refit_after_epoch(loop.pair, loop.data)
    record = epoch_record(
        loop.pair, loop.data, config, state.epoch + 1, state.step, loop.validation
    )
    record.update(beta=epoch.beta, train_objective=total / loop.n)
    if config.grad_tolerance > 0:
        norm = full_gradient(
            loop.loss_fn, result.optimizer, epoch.args, epoch.scale, state.step, config.seed
        )
        record["grad_norm"] = norm / state.grad_start
    if hasattr(loop.objective.elbo, "epoch_state"):
        record.update(loop.objective.elbo.epoch_state(state.step))
    record.update(stopping(state, loop.pair, record, config))
    state.history.append(record)
    state.position, state.running = 0, None
    bar.set_postfix(test_elbo=f"{record['test_elbo']:.2f}", beta=f"{epoch.beta:.3g}")
    if loop.checkpointer is not None:
        loop.checkpointer.save(checkpoint_record(result, loop.shuffle.get_state()))
    if loop.on_epoch is not None:
        loop.on_epoch(record, result)
    return record


def end(loop: Loop, result: FitResult) -> FitResult:
    """After the last epoch: the best epoch's weights put back (early stopping), the ranks
    checked to agree, and how the loss ran."""
    if result.best is not None and result.best["epoch"] != result.last.get("epoch"):
        restore_best(result, loop.checkpointer, loop.shuffle)
    distributed.check_in_sync(loop.pair)
    result.jit = jit_status(loop.config, loop.loss_fn.traced)
    result.compile = compile_status(loop.config, loop.objective.compiled)
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


def restore_best(
    result: FitResult, checkpointer: Checkpointer | None, shuffle: torch.Generator
) -> None:
    """Put the best epoch's weights back in the pair. The checkpoint then holds them as
    its ``module`` (what a run presents) and the last weights as ``train_module`` (what a
    resumed run with more epochs trains on from)."""
    last = {k: v.detach().clone() for k, v in result.pair.state_dict().items()}
    result.pair.load_state_dict(result.best["module"])
    if checkpointer is not None:
        saved = replace(snapshot(result, shuffle.get_state()), train_module=last)
        checkpointer.save(saved.to_record())


def restore(
    result: FitResult, shuffle: torch.Generator, record: dict[str, Any], device: torch.device
) -> None:
    """Put a :func:`checkpoint_record` back (:meth:`TrainState.from_record`): the weights,
    the optimizer and the random streams into the objects they belong to, the rest as the
    result's state (a mid-epoch one's position and running loss included)."""
    saved = TrainState.from_record(record)
    try:
        weights = saved.train_module if saved.train_module is not None else saved.module
        result.pair.load_state_dict(weights)
        result.optimizer.load_state_dict(saved.optimizer)
        restore_objective(result.elbo, saved)
        set_rng_states(saved.rng, shuffle, device)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise does_not_fit(exc) from None
    running = distributed.main_share(saved.running)
    result.state = replace(
        saved, running=running, module={}, train_module=None, optimizer={}, rng={}, objective=None
    )


def restore_objective(elbo: Any, saved: TrainState) -> None:
    """The objective's own state put back; a run whose objective keeps one (FactorVAE's
    discriminator) refuses a checkpoint past its first step without it, rather than go on
    with a fresh one."""
    if isinstance(elbo, StepwiseELBO) and type(elbo).state_dict is not StepwiseELBO.state_dict:
        if not saved.objective and saved.step > 0:
            raise UserError(
                "the checkpoint holds no state of the objective's own networks (the "
                "discriminator); --resume cannot continue it: train the run again"
            )
    if saved.objective and hasattr(elbo, "load_state_dict"):
        elbo.load_state_dict(saved.objective)


def snapshot(result: FitResult, shuffle_state: torch.Tensor) -> TrainState:
    """The result's state with what lives in the objects it trains filled in: the weights,
    the optimizer's state, the random streams (``shuffle_state``: the shuffle generator's
    state for the next epoch at an epoch's end, the one the epoch started from inside it)
    and the running loss summed over the ranks."""
    cuda = torch.cuda.is_available() and result.pair.device.type == "cuda"
    rng = rng_states(shuffle_state, cuda)
    running = result.state.running
    if running is not None:
        running = distributed.sum_across(running).detach().reshape(1)
    return replace(
        result.state,
        running=running,
        module=result.pair.state_dict(),
        optimizer=result.optimizer.state_dict(),
        rng=rng,
        objective=getattr(result.elbo, "state_dict", dict)() or None,
    )


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


def example_batch(
    data: Dataset, model: Program | None = None, guide: Program | None = None, size: int = 2
):
    """``size`` training examples (two by default; at most all of them) and their labels, in
    the form the programs declare, for the programs' first trace, as scored (a binary draw
    under dynamic binarisation). ``size`` = the configured batch size gives the real first
    batch (:class:`~ppl_vae.programs.Programs`' ``batch``)."""
    form = label_form(model, guide) if model is not None else "ids"
    size = min(size, data.x_train.shape[0])
    n = data.x_train.shape[0] if data.y_train is not None and form != "ids" else size
    return labels.first_batch(form, data.scored_train(n), data.y_train, size)


def checkpoint_record(result: FitResult, shuffle_state: torch.Tensor) -> dict[str, Any]:
    """Everything :func:`fit` needs to continue bit for bit (:func:`snapshot`'s
    :meth:`TrainState.to_record`): weights, optimizer moments, history, the random
    streams, and inside an epoch the steps taken in it and its running loss (all uint8 or
    float tensors, no pickles)."""
    return snapshot(result, shuffle_state).to_record()
