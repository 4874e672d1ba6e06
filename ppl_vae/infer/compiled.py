"""The training loss compiled with ``torch.compile`` (``--compile``), checked before use.

The trace of :mod:`ppl_vae.infer.jit` removes Pyro's per-step Python work, but its replay
still runs every operation of the step one by one, forward and backward, through the
autograd engine. ``torch.compile`` over the programs themselves graph-breaks on Pyro's
effect handlers (and was slower than the trace); so here the loss is first *recorded* as
an FX graph of ATen operations with ``make_fx`` (the programs run once through Pyro with
the parameters as graph inputs, like a trace), and that graph, which holds no Python,
is compiled whole (``fullgraph=True``): Inductor fuses the forward and the backward into a
few kernels around the matrix products.

The guarantees of the trace are kept:

- one graph per argument signature (shapes, dtypes, devices) and mode, compiled with
  ``dynamic=False`` once per run; only the largest batch of a run (the full minibatch) is
  compiled, a smaller one (the last, short batch of an epoch) runs the checked trace, so
  a run pays one compilation;
- the random draws stay operations of the graph that draw from torch's generator in the
  programs' order (Inductor's ``fallback_random``, set for this compilation only), so a
  compiled run follows the same random stream;
- before a compiled graph is used, its loss and gradients are compared with the
  programs' own on the next batch of that signature (one it was not recorded on), with
  the same random draws, within :data:`~ppl_vae.infer.jit.RTOL` (fused float32
  arithmetic differs in the last bits, so a compiled run is close to, not bit for bit,
  an eager one). If recording, compiling or the check fails, the loss runs as without
  ``--compile`` (the checked trace, or eagerly) and :attr:`Compiled.reason` says why;
- a recording that sees the programs' control flow depend on the data (as the trace's
  does, :mod:`ppl_vae.infer.jit`) is not compiled;
- a compiled graph that raises on a later batch is given up the same way, and that step
  is taken again without it on the same batch from the same random state.

Nothing is imported from ``torch._dynamo`` or ``torch.fx`` until a graph is recorded, and
no global setting changes: Inductor's options go to this one ``torch.compile`` call.

Example::

    >>> import torch
    >>> from ppl_vae.models.vae import VAE
    >>> from ppl_vae.infer.elbo import make_elbo
    >>> from ppl_vae.infer.objective import Objective
    >>> from ppl_vae.programs import from_object
    >>> x = torch.rand(6, 8)
    >>> pair = from_object(VAE(x_dim=8, latent_dim=2, hidden=(4,)), x)
    >>> loss = Objective(pair, make_elbo(), jit=True, compile=True)
    >>> loss.compiled.backend = "aot_eager"  # Inductor compiles for a minute on a small CPU
    >>> values = [loss(x.roll(i, 0), beta=0.5) for i in range(3)]  # record, check, use
    >>> loss.compiled.reason, len(loss.compiled.checked)
    (None, 1)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ppl_vae.infer.jit import (
    _NOT_TENSORS,
    _difference,
    _kinds,
    _Probe,
    _quiet_recording,
    _rng_state,
    _set_rng_state,
    _signature,
    _Step,
)

#: ``torch.compile``'s backend; ``fallback_random`` keeps the random draws those of torch's
#: generator (the programs' own stream), so the check compares the same draws.
BACKEND = "inductor"
INDUCTOR_OPTIONS = {"fallback_random": True}


class Compiled:
    """The compiled losses of one :class:`~ppl_vae.infer.objective.Objective`.

    ``loss(args, beta)`` returns the loss of a batch: from the compiled graph of its
    signature when it passed its check, else from ``fallback(args, beta)`` (the trace or
    the programs). ``reason`` is ``None`` while compiling works and says why it was given
    up otherwise; ``checked`` lists the keys whose compiled graph passed the check;
    ``seconds`` is the time spent recording and compiling.
    """

    def __init__(
        self, objective: nn.Module, fallback: Callable[[tuple, float], torch.Tensor]
    ) -> None:
        self._step = _Step(objective)
        self._eager = objective.eager
        self._pair = objective.pair
        self._fallback = fallback
        self._graphs: dict[tuple, Callable[..., torch.Tensor]] = {}
        self._largest = 0
        self._inputs: list[torch.Tensor] = []  # the parameters and buffers, in graph order
        self._beta: tuple[float, torch.Tensor] | None = None  # beta and its 0-d tensor
        self.backend = BACKEND
        self.checked: list[tuple] = []
        self.reason: str | None = None
        self.seconds = 0.0

    def loss(self, args: tuple[torch.Tensor, ...], beta: float) -> torch.Tensor:
        if self.reason is None and not all(isinstance(a, torch.Tensor) for a in args):
            self._give_up(_NOT_TENSORS.format(_kinds(args)))
        if self.reason is not None:
            return self._fallback(args, beta)
        size = args[0].shape[0] if args and args[0].dim() else 0
        if self.reason is not None or not torch.is_grad_enabled() or size < self._largest:
            return self._fallback(args, beta)
        self._largest = size
        key = (_signature(args), self._pair.training)
        if self._beta is None or self._beta[0] != beta:  # (a constant beta: one tensor)
            self._beta = (beta, torch.tensor(float(beta)))
        beta_t = self._beta[1]
        if key not in self._graphs:
            self._record(key, beta_t, args)
            return self._eager(*args, beta=beta)  # the graph is checked on the next batch
        if key not in self.checked:
            return self._check(key, beta_t, args, beta)
        state = _rng_state(args)
        try:
            return self._graphs[key](self._inputs, beta_t, *args)
        except Exception as exc:  # the step again, as without --compile, from the same state
            self._give_up(
                f"the compiled loss failed on a later batch ({_message(exc)}); that step was "
                "repeated without it"
            )
            _set_rng_state(state)
            return self._fallback(args, beta)

    def _tensors(self) -> list[torch.Tensor]:
        """The graph's first inputs, collected again at each recording and check (walking
        the modules every step would cost a fraction of a millisecond): optimizer steps,
        ``load_state_dict`` and ``.to()`` update these tensors in place."""
        self._inputs = [*self._step.parameters(), *self._step.buffers()]
        return self._inputs

    def _record(self, key: tuple, beta_t: torch.Tensor, args: tuple) -> None:
        """The loss as an FX graph of ATen operations, the parameters and buffers its first
        inputs, handed to ``torch.compile`` (which compiles at its first call)."""
        from torch.func import functional_call
        from torch.fx.experimental.proxy_tensor import make_fx

        t0 = time.perf_counter()
        names = [
            *(n for n, _ in self._step.named_parameters()),
            *(n for n, _ in self._step.named_buffers()),
        ]

        def step(tensors: list[torch.Tensor], beta: torch.Tensor, *xs: torch.Tensor):
            return functional_call(self._step, dict(zip(names, tensors)), (beta, *xs))

        devices = [a.device for a in args if a.device.type == "cuda"][:1]
        probe = _Probe()
        try:
            with torch.random.fork_rng(devices=devices), _quiet_recording(), probe:
                graph = make_fx(step)(self._tensors(), beta_t, *args)
            if probe.found is not None:  # as the trace: a recording would freeze it
                self._give_up(
                    f"the programs {probe.found}: their control flow depends on the data, "
                    "which a recording would freeze"
                )
                self.seconds += time.perf_counter() - t0
                return
            options = INDUCTOR_OPTIONS if self.backend == "inductor" else None
            self._graphs[key] = torch.compile(
                graph, backend=self.backend, dynamic=False, fullgraph=True, options=options
            )
        except Exception as exc:  # any failure to record means: run as without --compile
            self._give_up(f"the loss could not be recorded for compiling ({_message(exc)})")
        self.seconds += time.perf_counter() - t0

    def _check(self, key: tuple, beta_t: torch.Tensor, args: tuple, beta: float) -> torch.Tensor:
        """The programs' loss and gradients, then the compiled graph's (compiled here, at its
        first call) with the same random draws; returns the compiled loss when they agree,
        the programs' otherwise."""
        params = [p for p in self._step.parameters() if p.requires_grad]
        cuda = [a.device for a in args if a.device.type == "cuda"][:1]
        before = torch.get_rng_state(), torch.cuda.get_rng_state(cuda[0]) if cuda else None
        eager = self._eager(*args, beta=beta)
        expected = torch.autograd.grad(eager, params, retain_graph=True, allow_unused=True)
        after = torch.get_rng_state(), torch.cuda.get_rng_state(cuda[0]) if cuda else None
        _set_rng(before, cuda)
        t0 = time.perf_counter()
        try:
            with _quiet_recording():
                compiled = self._graphs[key](self._tensors(), beta_t, *args)
            got = torch.autograd.grad(compiled, params, retain_graph=True, allow_unused=True)
            problem = _difference(eager, compiled, expected, got)
            if problem is None:
                self.checked.append(key)
                return compiled
            self._give_up(
                f"the compiled loss {problem} on a batch it was not recorded on (a value the "
                "programs or the ELBO read into Python is frozen in the recording)"
            )
        except Exception as exc:
            self._give_up(f"the loss could not be compiled ({_message(exc)})")
        finally:
            self.seconds += time.perf_counter() - t0
        _set_rng(after, cuda)
        return eager

    def _give_up(self, reason: str) -> None:
        self.reason = reason
        self._graphs.clear()
        self.checked.clear()


def _set_rng(state: tuple, cuda: list) -> None:
    torch.set_rng_state(state[0])
    if cuda:
        torch.cuda.set_rng_state(state[1], cuda[0])


def _message(exc: Exception) -> str:
    """The exception's name and first line (two when the first ends in ``:``, as
    ``BackendCompilerFailed``'s ``backend=... raised:`` does)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    shown = lines[:2] if len(lines) > 1 and lines[0].endswith(":") else lines[:1]
    return f"{type(exc).__name__}: {' '.join(shown)}"
