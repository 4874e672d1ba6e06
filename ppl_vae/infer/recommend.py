"""A model's recommended training settings and how yours combine with them.

A program's module may recommend settings (``train_defaults = {...}`` on its class);
:func:`recommended` reads them, :func:`yielding` drops those your own settings rule out,
and :func:`recommended_config` is the config :func:`~ppl_vae.infer.trainer.fit` uses without
one, your settings over the recommended ones, as the command line's flags win over them
(:func:`ppl_vae.runs.config.resolve`). Importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from ppl_vae.infer.config import TrainConfig

if TYPE_CHECKING:
    from ppl_vae.programs import Program, Programs


def recommended(model: Program | Programs, guide: Program | None = None) -> dict[str, Any]:
    """The training settings the programs' module recommends (``train_defaults``); a
    :class:`~ppl_vae.programs.Programs` pair may be passed as ``model``."""
    from ppl_vae.programs import Programs, owner_of

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
