"""Inference: objectives over traces and the trainer that fits any model/guide pair.

One concept per file, as in ``pyro.infer``: ``config.py`` (:class:`TrainConfig`, its
defaults and its one validation; no torch), ``elbo.py`` (the ELBO estimators),
``objective.py`` (the loss module over a pair, and :class:`StepwiseELBO` for objectives
with per-step state), ``latent_scale.py`` (beta as a ``poutine.scale`` restricted to the
latent sites), ``capacity.py``, ``tcvae.py``, ``mmd.py`` (WAE and InfoVAE), ``dip.py``
(DIP-VAE), ``factorvae.py`` and ``aae.py`` (FactorVAE and the adversarial autoencoder, each
with its own discriminator): objectives extending Pyro's ``Trace_ELBO`` through
``_differentiable_loss_particle`` and ``super()``,
``iwae.py``, ``miwae.py`` and ``ciwae.py`` (the importance-weighted bounds, per example),
``jit.py`` (the loss traced once per batch shape, checked, replayed), ``schedules.py``
(beta and learning rate as pure functions of the step), ``distributed.py`` (torchrun and
DDP), ``trainer.py`` (:func:`fit`, which knows no files), ``state.py`` (its loop's
state as one value, what a checkpoint holds) and ``stopping.py`` (why training stops).
To add an objective: a file here with the ELBO class and a
``from_config(config, max_plate_nesting, dataset_size)`` function, and one line in
:data:`ppl_vae.infer.config.OBJECTIVES`.

``from ppl_vae.infer import fit, TrainConfig`` (and ``recommended_config``, a model's
recommended settings with yours over them) loads the trainer on first use, so
importing this package imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "fit": "trainer",
    "recommended_config": "recommend",
    "FitResult": "trainer",
    "Objective": "objective",
    "make_elbo": "elbo",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
