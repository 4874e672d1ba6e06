"""The training objective as an ``nn.Module``: a Pyro ELBO over a program pair.

:class:`Objective` holds a :class:`~ppl_vae.programs.Programs` pair (so its
``parameters()`` are every parameter the programs use) and a Pyro ELBO; its ``forward``
is the differentiable negative ELBO of a batch, summed over the batch,

.. math::

    -\\mathcal{L}_\\beta = -\\textstyle\\sum_n \\mathbb{E}_q[\\log p(x_n \\mid z)]
        + \\beta \\sum_n \\mathbb{E}_q[\\log q(z \\mid x_n) - \\log p(z)],

with beta applied by :func:`~ppl_vae.infer.latent_scale.scale_latents` to the latent
sites of *both* programs (any program, no ``beta`` argument needed). This module is what
one ``torch.optim`` optimizer steps and what ``DistributedDataParallel`` wraps.

The ELBO estimators themselves are in :mod:`ppl_vae.infer.elbo`; an objective whose
settings follow the step derives from :class:`StepwiseELBO`.

Example::

    >>> import torch
    >>> from ppl_vae.infer.elbo import Trace_ELBO
    >>> from ppl_vae.programs import from_object
    >>> from ppl_vae.models.vae import VAE
    >>> x = torch.rand(8, 64)
    >>> loss = Objective(from_object(VAE(x_dim=64, latent_dim=2), x), Trace_ELBO())
    >>> losses = []
    >>> for beta in (1.0, 2.0):  # the same draw of z, two weights of the KL term
    ...     _ = torch.manual_seed(0)
    ...     losses.append(float(loss(x, beta=beta).detach()))
    >>> losses[1] > losses[0] > 0
    True
"""

from __future__ import annotations

import pyro.infer
import torch
from torch import nn

from ppl_vae.infer.compiled import Compiled
from ppl_vae.infer.jit import Traced
from ppl_vae.infer.latent_scale import scale_latents
from ppl_vae.programs import Programs


class StepwiseELBO:
    """A mixin for ELBOs whose settings follow the training step (the capacity target,
    the TC weight): the objective owns that state, and :func:`~ppl_vae.infer.trainer.fit`
    calls one hook before each step, :meth:`at_step`, whose return is the scale of the
    latent sites for that step, and :meth:`epoch_state` after each epoch (added to the
    epoch record); :meth:`state_dict` goes into each checkpoint. Pyro's own ELBOs have no
    such state: for them the scale is beta.
    Such an ELBO is not traced (``traceable``): a trace would freeze its settings."""

    traceable = False

    def at_step(self, step: int, beta: float) -> float:
        return beta

    def epoch_state(self, step: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        """The objective's own trained state (tensors; FactorVAE's discriminator), which
        the run's checkpoint saves and a resume puts back with :meth:`load_state_dict`."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def scaled(pair: Programs, beta: float | torch.Tensor):
    """The pair's ``(model, guide)`` with every latent site scaled by ``beta``: the guide's
    sample sites of each trace, whatever their names (a tensor ``beta``, a traced input,
    always scales)."""
    if not isinstance(beta, torch.Tensor) and beta == 1.0:
        return pair.model, pair.guide
    return scale_latents(beta, pair.model, pair.guide, pair.all_latent_sites)


class Objective(nn.Module):
    """``loss(*args, beta=1.0)``: the negative beta-ELBO of the pair on one batch.

    With ``jit=True`` the loss is traced once per batch shape and replayed without Pyro's
    per-step Python work, after a check against the programs (:mod:`ppl_vae.infer.jit`);
    ``traced.reason`` says why not when the programs cannot be traced. With ``compile=True``
    the loss of the full batches is recorded as a graph and ``torch.compile``-d, after the same
    check (:mod:`ppl_vae.infer.compiled`); the other batches, and every batch once
    ``compiled.reason`` says why compiling was given up, run as without it. Use either only
    with an ELBO whose settings do not change between steps; an ELBO with an
    ``untraceable`` attribute (a reason) runs eagerly, with that reason."""

    def __init__(
        self, pair: Programs, elbo: pyro.infer.ELBO, jit: bool = False, compile: bool = False
    ):
        super().__init__()
        self.pair = pair
        self.elbo = elbo
        self.traced = Traced(self) if jit else None
        self.compiled = Compiled(self, self.uncompiled) if compile else None
        why = getattr(elbo, "untraceable", None)  # an estimator with side effects says so
        for recorder in (self.traced, self.compiled):
            if recorder is not None and why:
                recorder.reason = why

    def forward(self, *args: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        if self.compiled is not None:
            return self.compiled.loss(args, beta)
        return self.uncompiled(args, beta)

    def uncompiled(self, args: tuple[torch.Tensor, ...], beta: float) -> torch.Tensor:
        """The loss without ``torch.compile``: the checked trace, or the programs."""
        if self.traced is not None:
            return self.traced.loss(args, beta)
        return self.eager(*args, beta=beta)

    def eager(self, *args: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The loss from running the programs through Pyro (what a trace records)."""
        model, guide = scaled(self.pair, beta)
        with self.pair.scope():
            return self.elbo.differentiable_loss(model, guide, *args)
