"""Why training stops: the reasons (:class:`StopReason`) and the decision after each epoch.

An epoch record's ``stopped`` is None while the run goes on, else one of the reasons'
strings, which ``metrics.json`` keeps: the epochs ran out (``"epochs reached"``); a
full-batch deterministic loss changed by less than ``tolerance`` (relative) over
``patience`` epochs, or its gradient's norm fell below ``grad_tolerance`` of its first
(``"converged"``); the validation ELBO did not improve for ``patience`` epochs
(``"no improvement for N epochs"``, Prechelt 1998). :func:`stopping` reads only the history
and the best epoch kept so far, both in the trainer's state
(:class:`~ppl_vae.infer.state.TrainState`), so a resumed run stops where an uninterrupted
one does.

Example::

    >>> StopReason.NO_IMPROVEMENT.text(patience=3)
    'no improvement for 3 epochs'
    >>> StopReason.CONVERGED == "converged"
    True
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch

from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.state import TrainState


class StopReason(str, Enum):
    """Why training stopped after an epoch; the value is what the records say."""

    EPOCHS = "epochs reached"
    CONVERGED = "converged"
    NO_IMPROVEMENT = "no improvement for {patience} epochs"

    def text(self, patience: int = 0) -> str:
        """The plain string an epoch record's ``stopped`` holds."""
        return self.value.format(patience=patience)

    @classmethod
    def ends_training(cls, stopped: str | None) -> bool:
        """True when a recorded ``stopped`` means a resume trains no further whatever its
        epochs (converged or stopped early); running out of epochs does not."""
        return stopped not in (None, cls.EPOCHS.value)


def stopping(
    state: TrainState, pair: torch.nn.Module, record: dict[str, Any], config: TrainConfig
) -> dict[str, Any]:
    """``stopped`` and ``best_epoch`` of a new epoch ``record`` (not yet in the history);
    with early stopping, a better validation ELBO keeps ``pair``'s weights in
    ``state.best`` (``{"epoch", "value", "module"}``)."""
    epoch, reason = record["epoch"], None
    if config.early_stopping:
        value = record["val_elbo"]
        if state.best is None or value > state.best["value"]:
            weights = {k: v.detach().clone() for k, v in pair.state_dict().items()}
            state.best = {"epoch": epoch, "value": value, "module": weights}
        if epoch - state.best["epoch"] >= config.patience:
            reason = StopReason.NO_IMPROVEMENT.text(config.patience)
    if config.tolerance > 0 and reason is None:
        losses = [r["train_objective"] for r in state.history[-config.patience :]]
        losses.append(record["train_objective"])
        changes = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, losses[1:])]
        if len(changes) == config.patience and max(changes) < config.tolerance:
            reason = StopReason.CONVERGED.text()
    size = record.get("grad_norm")
    if reason is None and size is not None and size <= config.grad_tolerance:
        reason = StopReason.CONVERGED.text()
    if reason is None and epoch >= config.epochs:
        reason = StopReason.EPOCHS.text()
    best = state.best["epoch"] if state.best is not None else epoch
    return {"stopped": reason, "best_epoch": best}
