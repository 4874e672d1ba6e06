"""The training configuration: :class:`TrainConfig`, its defaults and its one validation.

Nothing here imports torch or Pyro: the command line builds its parser from these
defaults and names (``ppl-vae --help`` answers at once). A config is checked by
:meth:`TrainConfig.validate` -- every field through :mod:`ppl_vae.validate`, then the
combinations an objective cannot use -- once per job: a checked config remembers it
until a field changes, so :func:`~ppl_vae.infer.trainer.fit` checks only a config its
caller did not.

:data:`OBJECTIVES` is the one table of objectives: a name (``--objective``) and the
``module:function`` that builds its ELBO from a config (``from_config(config,
max_plate_nesting, dataset_size)``). Adding an objective is one file in ``infer/`` with
such a function and one line here; the trainer names none of them.

Example::

    >>> cfg = TrainConfig(epochs=2, beta=4.0)
    >>> cfg.validate() is cfg
    True
    >>> TrainConfig(beta=0.0).validate()
    Traceback (most recent call last):
    ...
    ppl_vae.errors.UserError: --beta must be positive, got 0.0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ppl_vae import validate
from ppl_vae.errors import UserError

#: ``--objective`` name -> ``module:function`` building its ELBO from a config.
OBJECTIVES = {
    "elbo": "ppl_vae.infer.elbo:from_config",  # beta-weighted, with schedules
    "capacity": "ppl_vae.infer.capacity:from_config",  # gamma |KL - C|, Burgess et al. 2018
    "iwae": "ppl_vae.infer.iwae:from_config",  # importance-weighted bound, Burda et al. 2015
    "tcvae": "ppl_vae.infer.tcvae:from_config",  # beta-TCVAE, Chen et al. 2018
    "miwae": "ppl_vae.infer.miwae:from_config",  # M IWAE bounds averaged, Rainforth et al. 2018
    "ciwae": "ppl_vae.infer.ciwae:from_config",  # beta ELBO + (1-beta) IWAE, Rainforth 2018
    "wae": "ppl_vae.infer.mmd:wae_from_config",  # WAE-MMD, Tolstikhin et al. 2018
    "infovae": "ppl_vae.infer.mmd:infovae_from_config",  # InfoVAE-MMD, Zhao et al. 2019
}
#: ``--mmd-kernel`` names (:mod:`ppl_vae.infer.mmd`).
MMD_KERNELS = ("imq", "rbf")
#: Objectives that bound log p(x) with importance weights: a beta would act inside them.
IMPORTANCE_WEIGHTED = ("iwae", "miwae", "ciwae")
#: ``--elbo`` names (:data:`ppl_vae.infer.elbo.ELBOS` holds the classes).
ELBO_KINDS = ("auto", "trace", "meanfield", "enum", "tracegraph", "renyi", "tmc")
#: ``--lr-schedule`` and ``--beta-schedule`` names (:mod:`ppl_vae.infer.schedules`).
LR_SCHEDULES = ("constant", "cosine", "step", "multistep", "exponential")
#: ``--optimizer`` names: Adam and the others by name (minibatches, any objective) or
#: L-BFGS (full batch, a fixed objective; :func:`ppl_vae.infer.optim.make_optimizer`).
OPTIMIZERS = validate.OPTIMIZERS
BETA_SCHEDULES = ("constant", "linear", "cyclical", "sigmoid")


@dataclass
class TrainConfig:
    """Everything the trainer needs; JSON-serialisable (it goes into ``config.json``)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (anneals to lr_final * lr)
    lr_final: float = 0.01
    seed: int = 0
    device: str = "auto"
    #: auto (meanfield where the pair's KL has a valid closed form, else trace; resolved by
    #: :func:`ppl_vae.infer.elbo.choose`) | trace | meanfield | enum
    elbo: str = "auto"
    num_particles: int = 1
    beta: float = 1.0
    beta_schedule: str = "constant"  # constant | linear | cyclical | sigmoid
    warmup_steps: int = 0
    cycles: int = 4
    # elbo | capacity (gamma * |KL - C|, Burgess et al. 2018) | iwae (the importance-
    # weighted bound with num_particles samples, Burda et al. 2015)
    objective: str = "elbo"
    gamma: float = 100.0
    capacity_max: float = 10.0  # nats per example, reached after capacity_steps
    capacity_steps: int = 1000
    #: MIWAE (Rainforth et al. 2018): M groups of ``num_particles`` K draws per example.
    miwae_groups: int = 8
    #: CIWAE (Rainforth et al. 2018): the ELBO's share beta in beta ELBO + (1-beta) IWAE.
    ciwae_beta: float = 0.5
    #: WAE-MMD and InfoVAE (Tolstikhin et al. 2018, Zhao et al. 2019): the kernel of the MMD
    #: between the batch's codes and prior draws, its weight lambda (per example), and
    #: InfoVAE's alpha (the KL weighs 1 - alpha, the MMD alpha + lambda - 1).
    mmd_kernel: str = "imq"
    mmd_lambda: float = 10.0
    info_alpha: float = 0.0
    eval_batch_size: int = 1000
    progress: bool = True
    #: Also checkpoint every this many steps inside an epoch (0: at epoch ends only), so a
    #: crash loses at most that many steps; resuming from such a checkpoint is exact.
    checkpoint_every: int = 0
    #: The run length (in epochs) that the lr and beta schedules span; None: ``epochs``.
    #: A run records it when it starts and keeps it when ``--epochs`` extends it on resume,
    #: so a resumed run follows the schedule it started with (cosine lr holds its final
    #: value past the planned end; cyclical beta keeps its period).
    schedule_epochs: int | None = None
    #: Trace the loss once per batch shape and replay it (:mod:`ppl_vae.infer.jit`): the same
    #: results without Pyro's per-step Python work. Programs that cannot be traced, and
    #: the capacity and tcvae objectives (their settings change every step), run eagerly.
    jit: bool = True
    #: Also ``torch.compile`` the loss of the full batches (:mod:`ppl_vae.infer.compiled`):
    #: compiled once per run, checked like the trace; falls back to it with a reason.
    compile: bool = False
    #: Training until converged. ``early_stopping``: carve a validation split from the
    #: training rows (:func:`ppl_vae.data.dataset.validation_split`: a fixed 10%, fixed
    #: seed; never the test set), score its ELBO each epoch, stop after ``patience``
    #: epochs without improvement and keep (restore) the best epoch's weights.
    early_stopping: bool = False
    patience: int = 10
    #: For a full-batch deterministic objective: stop once the relative change of the
    #: epoch's loss, ``|L_{t-1} - L_t| / |L_t|``, stays below ``tolerance`` (0: off) for
    #: ``patience`` epochs in a row.
    tolerance: float = 0.0
    #: ``adam``, or ``lbfgs``: full-batch L-BFGS with a strong-Wolfe line search, one
    #: ``LBFGS.step`` of :data:`~ppl_vae.infer.trainer.LBFGS_ITERATIONS` iterations per epoch,
    #: the random draws of the programs fixed for the whole run (the same noise at every
    #: evaluation, so the objective is deterministic). ``lr`` scales its first trial step.
    optimizer: str = "adam"
    #: For a full-batch deterministic objective: stop once the gradient of the epoch's loss
    #: is this small (0: off), measured as in :func:`~ppl_vae.infer.trainer.gradient_size`.
    grad_tolerance: float = 0.0
    # -- the optimizer's options (:mod:`ppl_vae.infer.optim`); None: the optimizer's own
    # default. ``weight_decay``: adam, adamw, clipped_adam, sgd, adagrad, rmsprop;
    # ``betas``: adam, adamw, clipped_adam; ``momentum``: sgd, rmsprop, adagrad_rmsprop
    # (its ``t``); ``clip_norm`` (each gradient element clamped) and ``lrd`` (lr times lrd
    # before every step): clipped_adam, Pyro's semantics.
    weight_decay: float | None = None
    betas: list[float] | None = None
    momentum: float | None = None
    clip_norm: float | None = None
    lrd: float | None = None
    #: The gradient of all parameters rescaled to at most this Euclidean norm before each
    #: step (0: off); any optimizer but lbfgs.
    grad_clip: float = 0.0
    #: ``lr_schedule`` step | multistep | exponential: the factor gamma, the period of
    #: ``step`` and the milestones of ``multistep``, in optimizer steps.
    lr_gamma: float = 0.1
    lr_step_size: int = 1000
    lr_milestones: list[int] = dataclasses.field(default_factory=list)
    #: ``elbo="renyi"``: the order alpha of the Renyi bound (None: Pyro's default, 0, the
    #: importance-weighted bound; alpha 1 would be the ELBO itself).
    renyi_alpha: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name != "_checked":
            object.__setattr__(self, "_checked", False)  # changed: check again

    def validate(self) -> TrainConfig:
        """Check every field and their combinations (one :class:`UserError` naming the
        option and the fix); returns the config. Checked once until a field changes."""
        if getattr(self, "_checked", False):
            return self
        validate.train_fields(dataclasses.asdict(self))
        if not isinstance(self.jit, bool):
            raise UserError(f"jit must be true or false, got {self.jit!r}")
        if not isinstance(self.early_stopping, bool):
            raise UserError(f"early_stopping must be true or false, got {self.early_stopping!r}")
        validate.integer("patience", self.patience, 1, validate.MAX_EPOCHS)
        if self.schedule_epochs is not None:
            validate.integer("schedule_epochs", self.schedule_epochs, 1, validate.MAX_EPOCHS)
        choices = {
            "lr_schedule": LR_SCHEDULES,
            "beta_schedule": BETA_SCHEDULES,
            "elbo": ELBO_KINDS,
            "objective": tuple(OBJECTIVES),
            "mmd_kernel": MMD_KERNELS,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(
                    f"unknown {name.replace('_', ' ')} {value!r}; choose one of "
                    f"{', '.join(allowed)}"
                )
        if self.objective in ("tcvae", "wae", "infovae") and self.num_particles != 1:
            raise UserError(
                f"--objective {self.objective} estimates its batch statistic (total "
                "correlation, MMD) from one draw per example: drop --num-particles"
            )
        if self.objective in ("wae", "infovae") and (
            self.beta != 1 or self.beta_schedule != "constant"
        ):
            raise UserError(
                f"--objective {self.objective} weighs its KL term itself (wae: none; infovae: "
                "1 - --info-alpha): drop --beta options"
            )
        if self.objective == "infovae" and self.info_alpha + self.mmd_lambda < 1:
            raise UserError(
                "--objective infovae weighs the MMD by --info-alpha + --mmd-lambda - 1, which "
                f"must be at least 0; got {self.info_alpha} + {self.mmd_lambda} - 1"
            )
        weighted = self.objective in IMPORTANCE_WEIGHTED
        if weighted and (self.beta != 1 or self.beta_schedule != "constant"):
            raise UserError(
                f"--objective {self.objective} bounds log p(x) itself; a beta would act inside "
                "the importance weights: drop --beta options"
                + (" (CIWAE's mixing weight is --ciwae-beta)" if self.objective == "ciwae" else "")
            )
        draws = self.num_particles * self.miwae_groups
        if self.objective == "miwae" and draws > validate.MAX_PARTICLES:
            raise UserError(
                f"--objective miwae draws --miwae-groups x --num-particles = {draws} samples "
                f"per example; at most {validate.MAX_PARTICLES}: use smaller values"
            )
        if self.objective == "capacity" and (self.beta != 1 or self.beta_schedule != "constant"):
            raise UserError("--objective capacity replaces beta by gamma; drop --beta options")
        if self.optimizer == "lbfgs":
            check_lbfgs(self)
        check_optimizer_options(self)
        object.__setattr__(self, "_checked", True)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def check_lbfgs(config: TrainConfig) -> None:
    """L-BFGS builds its curvature from differences of gradients of one function: the
    objective must be the same at every step (no schedule, no per-step settings). That
    the batch is the whole training set is checked where its size is known
    (:func:`ppl_vae.infer.trainer.check_optimizer`)."""
    fixed = "--optimizer lbfgs needs an objective that stays the same at every step"
    if config.objective in ("capacity", "tcvae"):
        raise UserError(f"{fixed}; --objective {config.objective} changes every step: use adam")
    if config.beta_schedule != "constant":
        raise UserError(f"{fixed}; drop --beta-schedule {config.beta_schedule} or use adam")
    if config.lr_schedule != "constant":
        raise UserError(
            f"{fixed}; --lr-schedule {config.lr_schedule} is for adam (L-BFGS's line search "
            "chooses each step): drop it"
        )


#: Which optimizers take which option (:mod:`ppl_vae.infer.optim`).
OPTIMIZER_OPTIONS = {
    "weight_decay": ("adam", "adamw", "clipped_adam", "sgd", "adagrad", "rmsprop"),
    "betas": ("adam", "adamw", "clipped_adam"),
    "momentum": ("sgd", "rmsprop", "adagrad_rmsprop"),
    "clip_norm": ("clipped_adam",),
    "lrd": ("clipped_adam",),
}


def check_optimizer_options(config: TrainConfig) -> None:
    """Each optimizer option given only to an optimizer that takes it, in its range; the
    learning-rate schedule's own settings in theirs."""
    for name, takers in OPTIMIZER_OPTIONS.items():
        value = getattr(config, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if config.optimizer not in takers:
            raise UserError(
                f"{flag} applies to {', '.join(takers)}, not --optimizer {config.optimizer}"
            )
        if name == "betas":
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in value)
            ):
                raise UserError(f"--betas takes two numbers in [0, 1), got {value!r}")
            continue
        high = 1.0 if name in ("momentum", "lrd") else None
        number = validate.real(name, value, positive=False, high=high)
        positive = name in ("clip_norm", "lrd")
        if number < 0 or (positive and number == 0):
            least = "positive" if positive else "at least 0"
            raise UserError(f"{flag} must be {least}, got {value}")
    grad_clip = validate.real("grad_clip", config.grad_clip, positive=False)
    if grad_clip < 0:
        raise UserError(f"--grad-clip must be 0 (off) or positive, got {config.grad_clip}")
    if grad_clip and config.optimizer == "lbfgs":
        raise UserError(
            "--grad-clip is for the minibatch optimizers; L-BFGS's line search "
            "chooses its steps: drop it"
        )
    gamma = validate.real("lr_gamma", config.lr_gamma)
    if gamma > 1:
        raise UserError(f"--lr-gamma must lie in (0, 1], got {config.lr_gamma}")
    validate.integer("lr_step_size", config.lr_step_size, 1, validate.MAX_STEPS)
    milestones = config.lr_milestones
    if not isinstance(milestones, (list, tuple)):
        raise UserError(f"--lr-milestones takes step numbers, got {milestones!r}")
    for m in milestones:
        validate.integer("lr_milestones", m, 1, validate.MAX_STEPS)
    if list(milestones) != sorted(set(milestones)):
        raise UserError(f"--lr-milestones must increase, got {list(milestones)}")
    if config.renyi_alpha is not None:
        if config.elbo != "renyi":
            raise UserError(f"--renyi-alpha applies to --elbo renyi, not --elbo {config.elbo}")
        alpha = validate.real("renyi_alpha", config.renyi_alpha, positive=False)
        if alpha == 1:
            raise UserError("--renyi-alpha 1 is the ELBO itself: use --elbo trace")
    if config.elbo in ("renyi", "tmc") and (config.beta != 1 or config.beta_schedule != "constant"):
        raise UserError(
            f"--elbo {config.elbo} bounds log p(x) with importance weights; a beta would act "
            "inside them: drop --beta options"
        )
    if config.lr_schedule == "multistep" and not milestones:
        raise UserError(
            "--lr-schedule multistep needs --lr-milestones (steps at which the lr "
            "is multiplied by --lr-gamma)"
        )
