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
}
#: ``--elbo`` names (:data:`ppl_vae.infer.elbo.ELBOS` holds the classes).
ELBO_KINDS = ("trace", "meanfield", "enum")
#: ``--lr-schedule`` and ``--beta-schedule`` names (:mod:`ppl_vae.infer.schedules`).
LR_SCHEDULES = ("constant", "cosine")
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
    elbo: str = "trace"  # trace | meanfield | enum
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
        if validate.real("tolerance", self.tolerance, positive=False, high=1.0) < 0:
            raise UserError(f"--tolerance must be 0 (off) or positive, got {self.tolerance}")
        if self.schedule_epochs is not None:
            validate.integer("schedule_epochs", self.schedule_epochs, 1, validate.MAX_EPOCHS)
        choices = {
            "lr_schedule": LR_SCHEDULES,
            "beta_schedule": BETA_SCHEDULES,
            "elbo": ELBO_KINDS,
            "objective": tuple(OBJECTIVES),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(
                    f"unknown {name.replace('_', ' ')} {value!r}; choose one of "
                    f"{', '.join(allowed)}"
                )
        if self.objective == "tcvae" and self.num_particles != 1:
            raise UserError(
                "--objective tcvae estimates the total correlation from one draw: "
                "drop --num-particles"
            )
        if self.objective == "iwae" and (self.beta != 1 or self.beta_schedule != "constant"):
            raise UserError(
                "--objective iwae bounds log p(x) itself; a beta would act inside the "
                "importance weights: drop --beta options"
            )
        if self.objective == "capacity" and (self.beta != 1 or self.beta_schedule != "constant"):
            raise UserError("--objective capacity replaces beta by gamma; drop --beta options")
        object.__setattr__(self, "_checked", True)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
