"""The trainer's state as one value: what a checkpoint holds and a resume puts back.

:func:`~ppl_vae.infer.trainer.fit` keeps its loop's counters in one :class:`TrainState`
(the global step, the history of epoch records, the seconds, the place in the epoch and
its running loss, the best epoch so far) and, when it checkpoints, fills in the rest from
the objects it trains (the weights, the optimizer's state, the random streams). Its
:meth:`~TrainState.to_record` is the checkpoint record (tensors and JSON values, no
pickles: :mod:`ppl_vae.runs.checkpoint` stores it) and :meth:`~TrainState.from_record`
reads one back, so what is saved and what is restored are one list of fields.

The random streams (``rng``, :func:`rng_states`): ``torch``, the global CPU generator that
Pyro's sample statements and the programs draw from; ``python`` and ``numpy``, the other
two that ``pyro.set_rng_seed`` seeds (Pyro's own ``pyro.util.get_rng_state``), which a
program may draw from; ``shuffle``, the generator of the epochs' permutations and dynamic
binarisation, as it stood when the saved epoch began (a mid-epoch resume draws the epoch's
permutation again and skips ``position`` steps); ``cuda``, the GPU generator of a run on
one. Each is a tensor (a checkpoint holds no pickles); a record without ``python`` or
``numpy`` (written before they were kept) leaves those two as the seed set them.

Example::

    >>> import torch
    >>> state = TrainState(step=3, history=[{"epoch": 1}], rng={"torch": torch.zeros(2)})
    >>> again = TrainState.from_record(state.to_record())
    >>> (again.step, again.epoch, again.position)
    (3, 1, 0)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ppl_vae.errors import UserError, first_line

#: The fields a record may lack: None (or the field's default) when it does.
OPTIONAL = ("best", "grad_start", "running", "train_module", "objective")


@dataclass
class TrainState:
    """Everything :func:`~ppl_vae.infer.trainer.fit` continues from, bit for bit."""

    #: Optimizer steps taken (the global step the schedules read).
    step: int = 0
    #: One record per finished epoch (:func:`~ppl_vae.measure.metrics.epoch_record`).
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Training seconds so far (scoring excluded).
    seconds: float = 0.0
    #: Steps taken in the epoch under way (0 at an epoch's end).
    position: int = 0
    #: That epoch's running sum of per-example losses (None at an epoch's end).
    running: torch.Tensor | None = None
    #: With early stopping, the best epoch so far: ``{"epoch", "value", "module"}``.
    best: dict[str, Any] | None = field(default=None, repr=False)
    #: With ``grad_tolerance``: the full-batch gradient's norm before the first step.
    grad_start: float | None = None
    #: The weights (the pair's state dict): the ones a run presents.
    module: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: The weights training goes on from, where they are not ``module`` (the best epoch's
    #: restored at the end of an early-stopped run).
    train_module: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    #: The optimizer's state dict (moments, step counts, hyper-parameters).
    optimizer: dict[str, Any] = field(default_factory=dict, repr=False)
    #: The random streams' states: ``torch``, ``shuffle`` and, on a GPU, ``cuda``.
    rng: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: The objective's own state (:meth:`~ppl_vae.infer.objective.StepwiseELBO.state_dict`:
    #: FactorVAE's discriminator and its optimizer), where it has one.
    objective: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def epoch(self) -> int:
        """Finished epochs."""
        return len(self.history)

    def to_record(self) -> dict[str, Any]:
        """The checkpoint record: every field (``epoch`` beside them), the optional ones
        only when set."""
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "seconds": self.seconds,
            "history": self.history,
            "module": self.module,
            "optimizer": self.optimizer,
            "rng": self.rng,
        }
        for name in OPTIONAL:
            if getattr(self, name) is not None:
                record[name] = getattr(self, name)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainState:
        """The state a :meth:`to_record` record holds; a record that lacks a field or holds
        one of the wrong type is one :class:`~ppl_vae.errors.UserError` line."""
        try:
            state = cls(
                step=int(record["step"]),
                history=list(record["history"]),
                seconds=float(record["seconds"]),
                position=int(record.get("position", 0)),
                module=dict(record["module"]),
                optimizer=dict(record["optimizer"]),
                rng=dict(record["rng"]),
                **{name: record.get(name) for name in OPTIONAL},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise does_not_fit(exc) from None
        if state.grad_start is not None:
            state.grad_start = float(state.grad_start)
        return state


def does_not_fit(exc: BaseException) -> UserError:
    """The one line for a checkpoint that cannot be put back into this run."""
    return UserError(
        f"the checkpoint does not fit this model ({type(exc).__name__}: {first_line(exc)}); "
        "resume with the run's own options"
    )


def rng_states(shuffle_state: torch.Tensor, cuda: bool = False) -> dict[str, torch.Tensor]:
    """The random streams as tensors: torch's, Python's and NumPy's global generators (the
    Mersenne Twister words, its position and the cached Gaussian if any, exact in float64), the
    shuffle generator's ``shuffle_state`` and, with ``cuda``, the current GPU's."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rng = {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle_state,
        "python": torch.tensor(
            [version, *words, gauss is not None, gauss or 0.0], dtype=torch.float64
        ),
        "numpy": torch.tensor([*keys.tolist(), pos, has_gauss, cached], dtype=torch.float64),
    }
    if cuda:
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def set_rng_states(
    rng: dict[str, torch.Tensor], shuffle: torch.Generator, device: torch.device
) -> None:
    """Put :func:`rng_states` back: into the global generators and ``shuffle`` (the CUDA
    one on a GPU ``device``); ``python`` and ``numpy`` where the record has them."""
    shuffle.set_state(rng["shuffle"])
    torch.set_rng_state(rng["torch"])
    if "python" in rng:
        *words, has_gauss, gauss = rng["python"].double().tolist()
        version, *words = (int(w) for w in words)
        random.setstate((version, tuple(words), gauss if has_gauss else None))
    if "numpy" in rng:
        *keys, pos, has_gauss, cached = rng["numpy"].double().tolist()
        keys = np.array(keys, dtype=np.uint32)
        np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), cached))
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
