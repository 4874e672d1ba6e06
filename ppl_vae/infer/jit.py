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
- Python control flow and values read from tensors are frozen in a trace, and so are
  shapes that depend on the data (a loop over the steps a boolean mask selects). So a
  trace is used only where the programs' control flow does not depend on the data:
  while recording, a value the programs' own code reads from a tensor into Python
  (``int(lengths.max())``, ``if x.mean() > 0``) or an operation of theirs whose result's
  shape depends on values (boolean-mask indexing, ``nonzero``, ``masked_select``,
  ``unique``) -- installed libraries' code (torch's, Pyro's, opt_einsum's) and the
  engine's are left to the check below --
  sends the programs to run eagerly for the whole run;
- before a trace is used, its loss and gradients are compared with the program's own on
  the next batch of that signature (one it was not traced on), with the same random
  draws. If they differ, or tracing fails, the program runs eagerly for the rest of the
  run;
- a replay that raises (a frozen loop length that a later batch does not have) is never
  seen by the user: the step is repeated eagerly on the same batch from the same random
  state, so it is the step an eager run takes, and the run continues eagerly.

:attr:`Traced.reason` says why the programs ran eagerly (``metrics.json``'s ``jit``).

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
import os
import sys
import warnings
from collections.abc import Callable

import pyro
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

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


#: Operations whose result's shape depends on the values of their input.
_SHAPE_OPS = {
    torch.nonzero,
    torch.Tensor.nonzero,
    torch.argwhere,
    torch.Tensor.argwhere,
    torch.masked_select,
    torch.Tensor.masked_select,
    torch.unique,
    torch.Tensor.unique,
    torch.unique_consecutive,
    torch.Tensor.unique_consecutive,
}


def _mask_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) and i.dim() > 0
        for i in items
    )


#: Reads of a tensor's value into Python.
_VALUE_READS = {
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
}


class _Probe(TorchFunctionMode):
    """Notes, while the programs are recorded, what a trace would freeze: a value the
    programs' own code reads from a tensor into Python (``int(lengths.max())``, ``if
    x.mean() > 0``) or an operation of theirs whose result's shape depends on values
    (boolean-mask indexing, ``nonzero``, ...). Installed libraries' and the engine's own
    code is left to the check (Pyro's, written to be traced, branches on the tracing
    state)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: str | None = None
        self._sizes: list = []  # what ``len()`` returned while tracing (a traced size)
        self._roots = _library_roots()
        torch_root = os.path.dirname(os.path.abspath(torch.__file__))
        self._machinery = tuple(
            os.path.join(torch_root, part)
            for part in ("fx", "_subclasses", "_dynamo", "overrides.py", "utils/_python_dispatch")
        )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__len__:  # a size, not data: ``len(x)`` reads it back
            out = func(*args, **(kwargs or {}))
            self._sizes.append(out)
            return out
        if func in _VALUE_READS and any(args[0] is t for t in self._sizes):
            return func(*args, **(kwargs or {}))
        if self.found is None and (
            func in _VALUE_READS
            or func in _SHAPE_OPS
            or (func is torch.Tensor.__getitem__ and len(args) > 1 and _mask_index(args[1]))
        ):
            caller = sys._getframe(1)
            while caller.f_back is not None and caller.f_code.co_filename.startswith(
                self._machinery
            ):  # make_fx's own modes re-dispatch the call: the caller is behind them
                caller = caller.f_back
            if _is_program_code(caller.f_code.co_filename, self._roots):
                where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
                if func in _VALUE_READS:
                    self.found = f"read a tensor's value into Python ({where})"
                else:
                    name = getattr(func, "__name__", str(func))
                    name = "a boolean-mask index" if name == "__getitem__" else f"{name}()"
                    self.found = f"take a shape from the data ({name} at {where})"
        return func(*args, **(kwargs or {}))


def _library_roots() -> tuple[str, ...]:
    """Where libraries live: installed packages (torch, Pyro, opt_einsum, ...), Python's
    own, and the engine; the engine's last (its ``models/`` are programs)."""
    import sysconfig

    import ppl_vae

    paths = sysconfig.get_paths()
    installed = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    installed |= {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
    installed = {os.path.abspath(p) + os.sep for p in installed}
    modules = (torch, pyro, ppl_vae)
    return (
        *sorted(installed),
        *(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in modules),
    )


def _is_program_code(filename: str, roots: tuple[str, ...]) -> bool:
    """A file of the programs: outside the libraries, or one of the suite's models (in
    ``ppl_vae/models``, programs like a user's)."""
    path = os.path.abspath(filename)
    return path.startswith(os.path.join(roots[-1], "models") + os.sep) or not path.startswith(roots)


def _rng_state(args: tuple) -> tuple:
    cuda = [a.device for a in args if isinstance(a, torch.Tensor) and a.device.type == "cuda"]
    return torch.get_rng_state(), (cuda[0], torch.cuda.get_rng_state(cuda[0])) if cuda else None


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1][1], state[1][0])


@contextlib.contextmanager
def _quiet_recording():
    """Pyro's validation off (it reads tensors back) and the tracer's warnings (about
    values it freezes, which the check against the program catches) silenced."""
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)
        yield


#: Why arguments other than tensors (a PackedSequence, a number) are not traced.
_NOT_TENSORS = "the programs take arguments that are not tensors ({}), which a trace cannot take"


def _kinds(args: tuple) -> str:
    return ", ".join(sorted({type(a).__name__ for a in args if not isinstance(a, torch.Tensor)}))


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
        if not all(isinstance(a, torch.Tensor) for a in args):
            self.reason = _NOT_TENSORS.format(_kinds(args))
            return self._eager(*args, beta=beta)
        key = (_signature(args), self._pair.training)
        beta_t = torch.tensor(float(beta))  # a CPU scalar: no copy to the device
        if key not in self._traces:
            self._record(key, beta_t, args)
            return self._eager(*args, beta=beta)  # the trace is checked on the next batch
        if key not in self.checked:
            return self._check(key, beta_t, args, beta)
        state = _rng_state(args)
        try:
            with torch.jit.optimized_execution(False):
                return self._traces[key](beta_t, *args)
        except Exception as exc:  # the step again, eagerly, as if no trace had been tried
            self.reason = (
                f"a trace of the loss failed to replay on a later batch ({type(exc).__name__}: "
                f"{first_line(exc)}); that step was repeated eagerly and the run went on eagerly"
            )
            self._traces.clear()
            _set_rng_state(state)
            return self._eager(*args, beta=beta)

    def _record(self, key: tuple, beta_t: torch.Tensor, args: tuple) -> None:
        devices = [a.device for a in args if a.device.type == "cuda"][:1]
        probe = _Probe()
        try:
            with torch.random.fork_rng(devices=devices), _quiet_recording(), probe:
                trace = torch.jit.trace(self._step, (beta_t, *args), check_trace=False)
        except Exception as exc:  # any failure to record means: run the program itself
            self.reason = (
                f"the programs could not be traced ({type(exc).__name__}: {first_line(exc)})"
            )
            return
        if probe.found is not None:
            self.reason = (
                f"the programs {probe.found}: their control flow depends on the data, which "
                "a trace would freeze (frozen values give wrong losses on other batches)"
            )
            return
        self._traces[key] = trace

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
