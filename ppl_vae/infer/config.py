"""The training configuration: :class:`TrainConfig`, a frozen value whose fields carry their
own default, check and help; the one validation.

Nothing here imports torch or Pyro: the command line builds its flags from these fields'
metadata (:func:`option`; ``ppl-vae --help`` answers at once). Adding a training option is
one field here: its default, its check (a function of :mod:`ppl_vae.validate`), its help;
the flag, the config-file key, the ``config.json`` entry and the resume comparison follow.
:meth:`TrainConfig.validate` checks every field with its check, then the combinations an
objective cannot use. A config is frozen, so a checked one stays checked: the job's
:func:`~ppl_vae.runs.config.resolve` checks it once and :func:`~ppl_vae.infer.trainer.fit`
checks only a config its caller did not.

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
from functools import partial
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
    "dip": "ppl_vae.infer.dip:from_config",  # DIP-VAE i/ii, Kumar et al. 2018
    "factorvae": "ppl_vae.infer.factorvae:from_config",  # FactorVAE, Kim & Mnih 2018
    "aae": "ppl_vae.infer.aae:from_config",  # adversarial AE, Makhzani et al. 2015
}
#: ``--dip-type`` names (:mod:`ppl_vae.infer.dip`).
DIP_TYPES = ("i", "ii")
#: Objectives that estimate a statistic of the batch from one draw per example.
BATCH_STATISTIC = ("tcvae", "wae", "infovae", "dip", "factorvae", "aae")
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


def option(
    default: Any,
    check: Any = None,
    help: str | None = None,
    *,
    choices: tuple[str, ...] = (),
    metavar: str | None = None,
    cli: str | None = "flag",
    resume_free: bool = False,
    factory: Any = None,
) -> Any:
    """A :class:`TrainConfig` field and everything said about it: its ``default``, its
    ``check`` (value in, normalised value out, or a :class:`UserError`) or its ``choices``,
    its ``help`` (argparse text) and ``metavar``, how the command line sets it (``cli``:
    ``"flag"`` ``--name VALUE``, ``"switch"`` ``--name``, ``"negate"`` ``--no-name``, None: no
    flag; a config file may set it all the same), whether ``--resume`` may change it, and
    ``factory`` for a mutable default (``factory=list``)."""
    meta = dict(check=check, help=help, choices=choices, metavar=metavar, cli=cli)
    meta["resume_free"] = resume_free
    if factory is not None:  # a mutable default (a list): made afresh for each config
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _whole(name: str, low: int, high: int) -> Any:
    return partial(validate.integer, name, low=low, high=high)


@dataclass(frozen=True)
class TrainConfig:
    """Everything the trainer needs; JSON-serialisable (it goes into ``config.json``)."""

    epochs: int = option(30, validate.epochs, resume_free=True)
    batch_size: int = option(32, validate.batch_size)
    lr: float = option(1e-3, validate.lr)
    #: constant | cosine (anneals to lr_final * lr)
    lr_schedule: str = option("constant", choices=LR_SCHEDULES)
    lr_final: float = option(0.01, validate.lr_final, "cosine: final lr / lr")
    seed: int = option(0, validate.seed)
    device: str = option("auto", validate.device, "auto | cpu | cuda", resume_free=True)
    #: auto (meanfield where the pair's KL has a valid closed form, else trace; resolved by
    #: :func:`ppl_vae.infer.elbo.choose`) | trace | meanfield | enum
    elbo: str = option("auto", choices=ELBO_KINDS)
    num_particles: int = option(1, validate.num_particles)
    beta: float = option(1.0, validate.beta, "weight of the KL term")
    beta_schedule: str = option("constant", choices=BETA_SCHEDULES)
    warmup_steps: int = option(0, validate.warmup_steps)
    cycles: int = option(4, validate.cycles, "cycles of the cyclical schedule")
    objective: str = option(
        "elbo",
        choices=tuple(OBJECTIVES),
        help="elbo (beta-weighted), capacity (gamma*|KL - C|, C rising to --capacity-max), "
        "iwae (the importance-weighted bound with --num-particles K samples), tcvae "
        "(beta-TCVAE: --beta weights the total correlation alone), miwae (--miwae-groups M "
        "IWAE bounds of K samples, averaged) or ciwae (--ciwae-beta * ELBO + (1 - it) * IWAE "
        "on the same K samples), wae (WAE-MMD: reconstruction + --mmd-lambda x MMD of the "
        "batch's codes to the prior) or infovae (InfoVAE: (1 - --info-alpha) x KL + "
        "(alpha + lambda - 1) x MMD), dip (DIP-VAE: the ELBO + a penalty pushing the "
        "batch's covariance of the guide's means (--dip-type i; ii adds the mean variance) "
        "towards I), factorvae (FactorVAE: the ELBO - --factor-gamma x a discriminator's "
        "estimate of the total correlation; the discriminator trains beside the pair) or aae "
        "(adversarial autoencoder: the reconstruction + --aae-lambda x an adversarial loss "
        "moving the codes towards the prior; no KL)",
    )
    gamma: float = option(100.0, partial(validate.real, "gamma"), "capacity objective weight")
    #: nats per example, reached after capacity_steps
    capacity_max: float = option(10.0, validate.capacity_max, "final C, nats/example")
    capacity_steps: int = option(
        1000, _whole("capacity_steps", 0, validate.MAX_STEPS), "steps for C to rise"
    )
    #: MIWAE (Rainforth et al. 2018): M groups of ``num_particles`` K draws per example.
    miwae_groups: int = option(
        8,
        _whole("miwae_groups", 1, validate.MAX_PARTICLES),
        "miwae: independent groups of --num-particles K draws per example",
        metavar="M",
    )
    #: CIWAE (Rainforth et al. 2018): the ELBO's share beta in beta ELBO + (1-beta) IWAE.
    ciwae_beta: float = option(
        0.5,
        partial(validate.share, "ciwae_beta"),
        "ciwae: the ELBO's share in [0, 1] (1: the ELBO, 0: the IWAE bound)",
    )
    #: WAE-MMD and InfoVAE (Tolstikhin et al. 2018, Zhao et al. 2019): the kernel of the MMD
    #: between the batch's codes and prior draws, its weight lambda (per example), and
    #: InfoVAE's alpha (the KL weighs 1 - alpha, the MMD alpha + lambda - 1).
    mmd_kernel: str = option("imq", choices=MMD_KERNELS, help="wae, infovae")
    mmd_lambda: float = option(
        10.0,
        partial(validate.real, "mmd_lambda"),
        "wae, infovae: the MMD's weight lambda, per example",
    )
    info_alpha: float = option(
        0.0,
        partial(validate.real, "info_alpha", positive=False, high=1.0),
        "infovae: alpha (the KL weighs 1 - alpha; 0 keeps the ELBO's KL)",
    )
    #: DIP-VAE (Kumar et al. 2018): lambda_od sum_{i!=j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2
    #: on the batch's covariance C of the guide's means (i) or of the codes (ii).
    dip_type: str = option("i", choices=DIP_TYPES, help="dip: i (Cov of the means) or ii")
    dip_lambda_od: float = option(
        10.0,
        partial(validate.nonnegative, "dip_lambda_od"),
        "dip: the weight of the off-diagonal covariances",
    )
    dip_lambda_d: float | None = option(
        None,
        partial(validate.nonnegative, "dip_lambda_d"),
        "dip: the weight of the diagonal's distance to 1 (default: 10 x lambda_od for "
        "type i, lambda_od for type ii, as the paper)",
    )
    #: FactorVAE (Kim & Mnih 2018): gamma times the discriminator's total-correlation estimate.
    factor_gamma: float = option(
        6.4,
        partial(validate.nonnegative, "factor_gamma"),
        "factorvae: the weight gamma of the total-correlation estimate",
    )
    #: FactorVAE and the adversarial autoencoder: the discriminator's hidden widths (None: the
    #: papers', 6 x 1000 for factorvae, 2 x 1000 for aae).
    discriminator_hidden: list[int] | None = option(
        None,
        validate.hidden_widths,
        "factorvae, aae: the discriminator's hidden widths (default: the paper's, 6 layers "
        "of 1000 for factorvae, 2 for aae)",
    )
    #: The adversarial autoencoder (Makhzani et al. 2015): the weight of the encoder's
    #: adversarial loss beside the reconstruction.
    aae_lambda: float = option(
        1.0,
        partial(validate.nonnegative, "aae_lambda"),
        "aae: the weight of the adversarial loss that moves the codes towards the prior",
    )
    eval_batch_size: int = option(
        1000, partial(validate.batch_size, name="eval_batch_size"), cli=None
    )
    progress: bool = option(
        True,
        partial(validate.boolean, "progress"),
        "hide the progress bar",
        cli="negate",
        resume_free=True,
    )
    #: Also checkpoint every this many steps inside an epoch (0: at epoch ends only), so a
    #: crash loses at most that many steps; resuming from such a checkpoint is exact.
    checkpoint_every: int = option(
        0,
        _whole("checkpoint_every", 0, validate.MAX_STEPS),
        "also checkpoint every N steps inside an epoch, so a crash loses at most N "
        "steps (default: at epoch ends only)",
        metavar="N",
        resume_free=True,
    )
    #: The run length (in epochs) that the lr and beta schedules span; None: ``epochs``.
    #: A run records it when it starts and keeps it when ``--epochs`` extends it on resume,
    #: so a resumed run follows the schedule it started with (cosine lr holds its final
    #: value past the planned end; cyclical beta keeps its period).
    schedule_epochs: int | None = option(
        None, _whole("schedule_epochs", 1, validate.MAX_EPOCHS), cli=None, resume_free=True
    )
    #: Trace the loss once per batch shape and replay it (:mod:`ppl_vae.infer.jit`): the same
    #: results without Pyro's per-step Python work. Programs that cannot be traced, and
    #: the capacity and tcvae objectives (their settings change every step), run eagerly.
    jit: bool = option(
        True,
        partial(validate.boolean, "jit"),
        "run the programs through Pyro every step instead of replaying a checked trace "
        "of the loss (same results, slower; for programs whose trace cannot be checked)",
        cli="negate",
        resume_free=True,
    )
    #: Also ``torch.compile`` the loss of the full batches (:mod:`ppl_vae.infer.compiled`):
    #: compiled once per run, checked like the trace; falls back to it with a reason.
    compile: bool = option(
        False,
        partial(validate.boolean, "compile"),
        "also torch.compile the loss of the full batches (checked against the programs "
        "like the trace, else not used, with the reason in metrics.json); compiling takes "
        "about a minute, once per run",
        cli="switch",
        resume_free=True,
    )
    #: Training until converged. ``early_stopping``: carve a validation split from the
    #: training rows (:func:`ppl_vae.data.dataset.validation_split`: a fixed 10%, fixed
    #: seed; never the test set), score its ELBO each epoch, stop after ``patience``
    #: epochs without improvement and keep (restore) the best epoch's weights.
    early_stopping: bool = option(
        False,
        partial(validate.boolean, "early_stopping"),
        "hold out a fixed 10%% of the training rows, stop after --patience epochs "
        "without a better validation ELBO and keep the best epoch's weights",
        metavar="true|false",
    )
    patience: int = option(10, _whole("patience", 1, validate.MAX_EPOCHS), "epochs without gain")
    #: For a full-batch deterministic objective: stop once the relative change of the
    #: epoch's loss, ``|L_{t-1} - L_t| / |L_t|``, stays below ``tolerance`` (0: off) for
    #: ``patience`` epochs in a row.
    tolerance: float = option(
        0.0,
        partial(validate.tolerance, "tolerance"),
        "full-batch deterministic losses: stop once the relative change of the loss "
        "stays below this for --patience epochs (0: off)",
    )
    #: ``adam``, or ``lbfgs``: full-batch L-BFGS with a strong-Wolfe line search, one
    #: ``LBFGS.step`` of :data:`~ppl_vae.infer.optim.LBFGS_ITERATIONS` iterations per epoch,
    #: the random draws of the programs fixed for the whole run (the same noise at every
    #: evaluation, so the objective is deterministic). ``lr`` scales its first trial step.
    optimizer: str = option(
        "adam",
        choices=OPTIMIZERS,
        help="adam (default), adamw, clipped_adam and adagrad_rmsprop (Pyro's), sgd, "
        "adagrad, rmsprop (options below), or lbfgs: full-batch L-BFGS with a strong-Wolfe "
        "line search, 20 iterations an epoch, the programs' random draws fixed for the run (needs "
        "--batch-size at least the training rows and an objective without schedules)",
    )
    #: For a full-batch deterministic objective: stop once the gradient of the epoch's loss
    #: is this small (0: off), measured as in :func:`~ppl_vae.infer.trainer.gradient_size`.
    grad_tolerance: float = option(
        0.0,
        partial(validate.tolerance, "grad_tolerance"),
        "full-batch losses: stop once the gradient's norm falls below this fraction "
        "of its norm before the first step (0: off)",
    )
    # -- the optimizer's options (:mod:`ppl_vae.infer.optim`); None: the optimizer's own
    # default; which optimizer takes which: :data:`OPTIMIZER_OPTIONS`. ``clip_norm`` (each
    # gradient element clamped) and ``lrd`` (lr times lrd before every step): Pyro's
    # ClippedAdam semantics.
    weight_decay: float | None = option(
        None,
        partial(validate.nonnegative, "weight_decay"),
        "adam, adamw (decoupled), clipped_adam, sgd, adagrad, rmsprop",
    )
    betas: list[float] | None = option(
        None, validate.betas, "adam, adamw, clipped_adam: beta1,beta2 (e.g. 0.95,0.999)"
    )
    momentum: float | None = option(
        None,
        partial(validate.nonnegative, "momentum", high=1.0),
        "sgd, rmsprop; adagrad_rmsprop's t",
    )
    clip_norm: float | None = option(
        None,
        partial(validate.real, "clip_norm"),
        "clipped_adam: each gradient element clamped to [-C, C] (Pyro's, 10)",
    )
    lrd: float | None = option(
        None,
        partial(validate.real, "lrd", high=1.0),
        "clipped_adam: the lr multiplied by this before every step (Pyro's, 1)",
    )
    #: The gradient of all parameters rescaled to at most this Euclidean norm before each
    #: step (0: off); any optimizer but lbfgs.
    grad_clip: float = option(
        0.0,
        partial(validate.nonnegative, "grad_clip"),
        "rescale the whole gradient to at most this norm each step (0: off)",
    )
    #: ``lr_schedule`` step | multistep | exponential: the factor gamma, the period of
    #: ``step`` and the milestones of ``multistep``, in optimizer steps.
    lr_gamma: float = option(
        0.1,
        validate.lr_gamma,
        "--lr-schedule step, multistep, exponential: the factor",
    )
    lr_step_size: int = option(
        1000,
        _whole("lr_step_size", 1, validate.MAX_STEPS),
        "--lr-schedule step: optimizer steps between decays",
    )
    lr_milestones: list[int] = option(
        (),
        validate.milestones,
        "--lr-schedule multistep: the steps of the decays, e.g. 1000,3000",
        factory=list,
    )
    #: ``elbo="renyi"``: the order alpha of the Renyi bound (None: Pyro's default, 0, the
    #: importance-weighted bound; alpha 1 would be the ELBO itself).
    renyi_alpha: float | None = option(
        None,
        validate.renyi_alpha,
        "--elbo renyi: the order of the bound (Pyro's default 0: the IWAE bound)",
    )

    def validate(self) -> TrainConfig:
        """Check every field (its own check or choices) and their combinations: one
        :class:`UserError` naming the option and the fix; returns the config. A config is
        frozen, so it is checked once (the job's :func:`~ppl_vae.runs.config.resolve`)."""
        if self.__dict__.get("_checked"):
            return self
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
        check_combinations(self)
        object.__setattr__(self, "_checked", True)  # frozen: stays true
        return self

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (unchecked until :meth:`validate`)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def check_field(f: dataclasses.Field, value: Any) -> None:
    """One field's check: its ``check`` function, or one of its ``choices``."""
    choices, check = f.metadata["choices"], f.metadata["check"]
    if choices and value not in choices:
        raise UserError(
            f"unknown {f.name.replace('_', ' ')} {value!r}; choose one of {', '.join(choices)}"
        )
    if check is not None and not (value is None and f.default is None):
        check(value)


def check_combinations(c: TrainConfig) -> None:
    """The settings an objective or optimiser cannot use together."""
    betas = c.beta != 1 or c.beta_schedule != "constant"
    if c.objective in BATCH_STATISTIC and c.num_particles != 1:
        raise UserError(
            f"--objective {c.objective} estimates its batch statistic (total "
            "correlation, MMD, covariance) from one draw per example: drop --num-particles"
        )
    if c.objective in ("wae", "infovae", "aae") and betas:
        raise UserError(
            f"--objective {c.objective} weighs its KL term itself (wae, aae: none; infovae: "
            "1 - --info-alpha): drop --beta options"
        )
    if c.objective == "infovae" and c.info_alpha + c.mmd_lambda < 1:
        raise UserError(
            "--objective infovae weighs the MMD by --info-alpha + --mmd-lambda - 1, which "
            f"must be at least 0; got {c.info_alpha} + {c.mmd_lambda} - 1"
        )
    if c.objective in IMPORTANCE_WEIGHTED and betas:
        raise UserError(
            f"--objective {c.objective} bounds log p(x) itself; a beta would act inside "
            "the importance weights: drop --beta options"
            + (" (CIWAE's mixing weight is --ciwae-beta)" if c.objective == "ciwae" else "")
        )
    draws = c.num_particles * c.miwae_groups
    if c.objective == "miwae" and draws > validate.MAX_PARTICLES:
        raise UserError(
            f"--objective miwae draws --miwae-groups x --num-particles = {draws} samples "
            f"per example; at most {validate.MAX_PARTICLES}: use smaller values"
        )
    if c.objective == "capacity" and betas:
        raise UserError("--objective capacity replaces beta by gamma; drop --beta options")
    if c.optimizer == "lbfgs":
        check_lbfgs(c)
    check_optimizer_options(c)


def check_lbfgs(config: TrainConfig) -> None:
    """L-BFGS builds its curvature from differences of gradients of one function: the
    objective must be the same at every step (no schedule, no per-step settings). That
    the batch is the whole training set is checked where its size is known
    (:func:`ppl_vae.infer.optim.check_optimizer`)."""
    fixed = "--optimizer lbfgs needs an objective that stays the same at every step"
    if config.objective in ("capacity", "tcvae", "factorvae", "aae"):
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


def check_optimizer_options(c: TrainConfig) -> None:
    """Each optimizer option given only to an optimizer that takes it; the options of the
    Renyi bound and of the learning-rate schedules only where they act."""
    for name, takers in OPTIMIZER_OPTIONS.items():
        if getattr(c, name) is not None and c.optimizer not in takers:
            raise UserError(
                f"{validate.flag(name)} applies to {', '.join(takers)}, not --optimizer "
                f"{c.optimizer}"
            )
    if c.grad_clip and c.optimizer == "lbfgs":
        raise UserError(
            "--grad-clip is for the minibatch optimizers; L-BFGS's line search "
            "chooses its steps: drop it"
        )
    if c.renyi_alpha is not None and c.elbo != "renyi":
        raise UserError(f"--renyi-alpha applies to --elbo renyi, not --elbo {c.elbo}")
    if c.elbo in ("renyi", "tmc") and (c.beta != 1 or c.beta_schedule != "constant"):
        raise UserError(
            f"--elbo {c.elbo} bounds log p(x) with importance weights; a beta would act "
            "inside them: drop --beta options"
        )
    if c.lr_schedule == "multistep" and not c.lr_milestones:
        raise UserError(
            "--lr-schedule multistep needs --lr-milestones (steps at which the lr "
            "is multiplied by --lr-gamma)"
        )
