"""The training loss traced once per batch shape (``torch.jit.trace``), checked before use.

Each step, Pyro runs the guide and the model through its effect handlers in Python:
messengers, trace nodes, distribution objects, site bookkeeping. On a CPU that costs a
few milliseconds a step, about as much as the whole step of a hand-written VAE at small
batches. The tensor operations of one step are the same every step for a program whose
structure is static, so :class:`Traced` records them once with ``torch.jit.trace`` (as
Pyro's own ``JitTrace_ELBO`` does) and replays the recording in C++ afterwards. The replay
runs without TorchScript's graph optimisations, so it computes the very operations of the
programs' step, gradients included, bit for bit (a resumed run stays exact); the random
draws are operations of the recording, drawn afresh on every call in the programs' order,
so a traced run follows the same random stream.

A trace is only a recording of one call, so:

- there is one trace per argument signature (shapes, dtypes, devices) and mode
  (``train()``/``eval()``, which programs may branch on): the last, short batch of an
  epoch gets its own;
- ``beta`` is an input of the trace (a 0-d tensor), so the beta schedules still work;
- Python control flow and values read from tensors are frozen in a trace. Before a trace
  is used, its loss and gradients are compared with the program's own on the next batch
  of that signature (one it was not traced on), with the same random draws. If they
  differ, or tracing fails, the program runs eagerly for the rest of the run and
  :attr:`Traced.reason` says why.

The parameters are those of the :class:`~ppl_vae.infer.objective.Objective` module (its
:class:`~ppl_vae.programs.Programs` pair holds every parameter the programs use), so the
trace reads them as module attributes: optimizer updates, ``load_state_dict`` and
``.to()`` reach it. Nothing here changes a global setting: validation is switched off
only while recording (Pyro's checks read tensors back to the host) and warnings of the
recording are silenced only around it.

Example::

    >>> import torch
    >>> from ppl_vae.models.vae import VAE
    >>> from ppl_vae.infer.elbo import make_elbo
    >>> from ppl_vae.infer.objective import Objective
    >>> from ppl_vae.programs import from_object
    >>> x = torch.rand(6, 64)
    >>> loss = Objective(from_object(VAE(x_dim=64, latent_dim=2), x), make_elbo(), jit=True)
    >>> values = [loss(x.roll(i, 0), beta=0.5) for i in range(3)]  # trace, check, use
    >>> loss.traced.reason, len(loss.traced.checked)
    (None, 1)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import pyro
import torch
from torch import nn

from ppl_vae.errors import first_line

#: Relative tolerance of the check of a trace against the program (float32 arithmetic in
#: a different order may differ in the last bits; a frozen value differs in the first).
RTOL = 1e-4


class _Step(nn.Module):
    """``forward(beta, *args)``: the objective's eager loss with beta as a tensor input."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, beta: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        return self.objective.eager(*args, beta=beta)


@contextlib.contextmanager
def _quiet_recording():
    """Pyro's validation off (it reads tensors back) and the tracer's warnings (about
    values it freezes, which the check against the program catches) silenced."""
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)
        yield


def _signature(args: tuple[torch.Tensor, ...]) -> tuple:
    return tuple((tuple(a.shape), a.dtype, a.device) for a in args)


class Traced:
    """The traces of one :class:`~ppl_vae.infer.objective.Objective`, by argument signature and
    mode.

    ``loss(args, beta)`` returns the loss of a batch: from the trace when it passed its
    check, else from ``objective.eager``. ``reason`` is ``None`` while tracing works and
    says why it was given up otherwise; ``checked`` lists the keys (signature, training
    mode) whose trace passed the check.
    """

    def __init__(self, objective: nn.Module):
        self._step = _Step(objective)
        self._eager: Callable[..., torch.Tensor] = objective.eager
        self._pair = objective.pair  # its train()/eval() mode is part of a trace's key
        self._traces: dict[tuple, torch.jit.ScriptModule] = {}
        self.checked: list[tuple] = []
        self.reason: str | None = None

    def loss(self, args: tuple[torch.Tensor, ...], beta: float) -> torch.Tensor:
        if self.reason is not None or not torch.is_grad_enabled():
            return self._eager(*args, beta=beta)
        other = next((a for a in args if not torch.is_tensor(a)), None)
        if other is not None:  # inputs by name: a constant, a PackedSequence
            self.reason = f"the programs take a {type(other).__name__}; a trace takes tensors"
            return self._eager(*args, beta=beta)
        key = (_signature(args), self._pair.training)
        beta_t = torch.tensor(float(beta))  # a CPU scalar: no copy to the device
        if key not in self._traces:
            self._record(key, beta_t, args)
            return self._eager(*args, beta=beta)  # the trace is checked on the next batch
        if key not in self.checked:
            return self._check(key, beta_t, args, beta)
        with torch.jit.optimized_execution(False):
            return self._traces[key](beta_t, *args)

    def _record(self, key: tuple, beta_t: torch.Tensor, args: tuple) -> None:
        devices = [a.device for a in args if a.device.type == "cuda"][:1]
        try:
            with torch.random.fork_rng(devices=devices), _quiet_recording():
                self._traces[key] = torch.jit.trace(self._step, (beta_t, *args), check_trace=False)
        except Exception as exc:  # any failure to record means: run the program itself
            self.reason = (
                f"the programs could not be traced ({type(exc).__name__}: {first_line(exc)})"
            )

    def _check(self, key: tuple, beta_t: torch.Tensor, args: tuple, beta: float) -> torch.Tensor:
        """The program's loss and gradients, then the trace's with the same random draws;
        returns the trace's loss when they agree, the program's otherwise."""
        params = [p for p in self._step.parameters() if p.requires_grad]
        before = torch.get_rng_state()
        cuda = [a.device for a in args if a.device.type == "cuda"][:1]
        cuda_before = torch.cuda.get_rng_state(cuda[0]) if cuda else None
        eager = self._eager(*args, beta=beta)
        expected = torch.autograd.grad(eager, params, retain_graph=True, allow_unused=True)
        after = torch.get_rng_state()
        cuda_after = torch.cuda.get_rng_state(cuda[0]) if cuda else None
        torch.set_rng_state(before)
        if cuda:
            torch.cuda.set_rng_state(cuda_before, cuda[0])
        try:
            with torch.jit.optimized_execution(False):
                traced = self._traces[key](beta_t, *args)
            got = torch.autograd.grad(traced, params, retain_graph=True, allow_unused=True)
            problem = _difference(eager, traced, expected, got)
            if problem is None:
                self.checked.append(key)
                return traced
            self.reason = (
                f"a trace of the loss {problem} on a batch it was not recorded on (a value "
                "the programs or the ELBO read into Python is frozen in a trace)"
            )
        except Exception as exc:
            message = first_line(exc)
            self.reason = f"a trace of the loss failed to replay ({type(exc).__name__}: {message})"
        self._traces.clear()
        torch.set_rng_state(after)
        if cuda:
            torch.cuda.set_rng_state(cuda_after, cuda[0])
        return eager


def _difference(eager, traced, expected, got) -> str | None:
    """What differs between the program's loss and gradients and the trace's, or None."""
    if not torch.allclose(traced, eager, rtol=RTOL, atol=RTOL):
        a, b = float(traced.detach()), float(eager.detach())
        return f"gives the loss {a:.6g} where the programs give {b:.6g}"
    for a, b in zip(expected, got):
        if (a is None) != (b is None):
            return "reaches other parameters"
        if a is not None:
            atol = RTOL * max(1.0, float(a.abs().max()))
            if not torch.allclose(b, a, rtol=RTOL, atol=atol):
                return "gives other gradients"
    return None
