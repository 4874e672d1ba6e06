"""The speed of one training step: the suite's VAE step against hand-written PyTorch.

The suite's side is exactly what :func:`ppl_vae.infer.trainer.fit` runs for ``ppl-vae train vae``:
the program pair of :class:`ppl_vae.models.vae.VAE` (a :class:`~ppl_vae.programs.Programs`),
the loss module of :func:`ppl_vae.infer.trainer.make_objective` (the ``trace`` ELBO, asked
for explicitly: ``train``'s default ``auto`` takes the closed-form KL, which the hand-written
side does not compute; the two differ by one KL formula per step), the optimizer
of :func:`ppl_vae.infer.optim.make_optimizer`, the epoch permutation of
:func:`ppl_vae.data.dataset.minibatches`, the beta and learning-rate schedules evaluated per step,
one :func:`ppl_vae.infer.trainer.train_step` per batch and the running loss summed on the device.

The hand-written side (:class:`HandVAE`) is the same network (the ``GaussianHead``
encoder and the MLP decoder, with the suite's weights copied in), the same Monte Carlo
ELBO estimator (one reparameterised draw, Bernoulli logits), the same optimizer and the
same minibatching, written the way a good PyTorch loop is: no host read per step.

With ``compile=True`` (``ppl-vae bench --compile``) a third side runs the step of
``TrainConfig(compile=True)`` (the loss ``torch.compile``-d, :mod:`ppl_vae.infer.compiled`) on
its own copy of the same weights; it is checked against the hand-written step like the
suite's side (its own compiled-versus-programs check runs first and pays the compilation
before any timing) and timed in the same interleaved rotation.

Before timing, both sides compute the loss and its gradients on the same batch with the
same noise (the same seed draws the same ``eps``); a mismatch is an error, so the sides
really time the same computation. Then blocks of ``steps`` steps alternate (A B A B ...,
the order flipped every repeat) in this one process, and the medians per step compare.

``ablate`` reverts fast-path changes one by one, to measure what each one bought:
``jit`` (the programs run through Pyro every step instead of the checked trace of the
loss, :mod:`ppl_vae.infer.jit`), ``elbo`` (Pyro's own ``Trace_ELBO``, which reads the loss back
to the host each step), ``adam`` (the one-tensor-at-a-time Adam, on both sides),
``permutation`` (the epoch's permutation drawn on the host and each batch's indices copied
to the device).

Example::

    >>> records = run(batch_sizes=[8], steps=2, repeats=1, hidden=(16,), latent=2, x_dim=12)
    >>> {"batch_size", "ratio", "hand_ms", "suite_ms"} <= set(records[0]), records[0]["batch_size"]
    (True, 8)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyro.infer
import torch
import torch.nn.functional as F
from torch import nn

from ppl_vae import data
from ppl_vae.errors import UserError
from ppl_vae.infer import trainer as train
from ppl_vae.infer.objective import Objective
from ppl_vae.models.blocks.nets import mlp
from ppl_vae.models.vae import VAE
from ppl_vae.programs import from_object

ABLATIONS = ("jit", "elbo", "adam", "permutation")


BATCHES_PER_EPOCH = 8  # the random data set holds this many batches


WARMUP = 3  # untimed steps per side before the first timed block


# wall: elapsed seconds; process: CPU seconds of this process, far less disturbed by other
# processes on a shared machine (the CPU only: a GPU's work is not this process's CPU time)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


class HandVAE(nn.Module):
    """The suite's MLP VAE written by hand: ``GaussianHead`` encoder (softplus scale plus
    1e-4), MLP decoder to Bernoulli logits, the ELBO with one reparameterised draw and the
    Monte Carlo KL term, as ``Trace_ELBO`` estimates it. ``forward`` is the mean negative
    ELBO per example."""

    def __init__(self, x_dim: int, hidden: Sequence[int], latent: int, min_scale: float = 1e-4):
        super().__init__()
        self.encoder = mlp([x_dim, *hidden, 2 * latent])
        self.decoder = mlp([latent, *reversed(hidden), x_dim])
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        eps = torch.randn_like(loc)
        z = loc + eps * scale
        log_lik = -F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        # log p(z) - log q(z|x) with N(0, I) prior; the 2 pi terms cancel
        log_ratio = (0.5 * (eps.square() - z.square()) + scale.log()).sum()
        return -(log_lik + log_ratio) / x.shape[0]

    def copy_from(self, vae: VAE) -> HandVAE:
        """Take the suite model's weights (the initialisation both sides start from)."""
        self.encoder.load_state_dict(vae.encoder.body.state_dict())
        self.decoder.load_state_dict(vae.decoder.state_dict())
        return self


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the allocator's peak since the last reset; CPU: the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Side:
    """One side of the comparison: ``block(steps)`` runs that many steps, returns seconds."""

    def __init__(self, name: str, device: torch.device, step: Callable[[], torch.Tensor]):
        self.name, self.device, self.step = name, device, step
        self.clock = time.perf_counter
        self.times: list[float] = []
        self.peak = 0.0

    def block(self, steps: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        synchronize(self.device)
        running = torch.zeros((), device=self.device)
        t0 = self.clock()
        for _ in range(steps):
            running += self.step()
        value = float(running)  # one read per block, as the trainer's log interval
        seconds = self.clock() - t0
        if not math.isfinite(value):
            raise UserError(f"the {self.name} loss became {value}; the benchmark diverged")
        self.times.append(seconds / steps)
        self.peak = max(self.peak, peak_memory_mb(self.device))


def forever(batches: Callable[[], Iterable[torch.Tensor]]) -> Iterator[torch.Tensor]:
    while True:
        yield from batches()


def suite_side(
    vae: VAE, x: torch.Tensor, config: train.TrainConfig, ablate: set[str]
) -> tuple[Side, Objective, torch.optim.Optimizer]:
    """The step of :func:`ppl_vae.infer.trainer.fit` over a random binary data set ``x`` (traced
    as ``config.jit`` says)."""
    device, n = x.device, x.shape[0]
    pair = from_object(vae, x[:2])
    pair.to(device).train()
    if "elbo" in ablate:
        elbo = pyro.infer.Trace_ELBO(max_plate_nesting=max(1, pair.max_plate_nesting))
        loss_fn = Objective(pair, elbo, jit=config.jit)
    else:
        loss_fn = train.make_objective(pair, config)
    optimizer = make_optimizer(pair.parameters(), config, ablate)
    shuffle = data.shuffle_generator(config.seed, device)
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = train.beta_schedule(config, steps_per_epoch)
    total_steps = config.epochs * steps_per_epoch
    if "permutation" in ablate:
        host = torch.Generator().manual_seed(config.seed)
        indices = forever(
            lambda: (i.to(device) for i in data.minibatches(n, config.batch_size, host))
        )
    else:
        indices = forever(lambda: data.minibatches(n, config.batch_size, shuffle, device=device))
    count = 0

    def step() -> torch.Tensor:
        nonlocal count
        idx = next(indices)
        args = (x[idx],)
        beta = schedule(count)
        train.set_learning_rate(optimizer, config, count, total_steps)
        loss = train.train_step(loss_fn, optimizer, args, beta, count)
        count += 1
        return loss * args[0].shape[0]

    def scoped() -> torch.Tensor:
        with pair.scope():
            return step()

    return Side("suite", device, scoped), loss_fn, optimizer


def hand_side(
    hand: HandVAE, x: torch.Tensor, config: train.TrainConfig, ablate: set[str]
) -> tuple[Side, torch.optim.Optimizer]:
    """A hand-written loop: device ``randperm`` slices, one step, the loss kept on the device."""
    device, n = x.device, x.shape[0]
    optimizer = make_optimizer(hand.parameters(), config, ablate)
    indices = forever(lambda: torch.randperm(n, device=device).split(config.batch_size))

    def step() -> torch.Tensor:
        xb = x[next(indices)]
        loss = hand(xb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach() * xb.shape[0]

    return Side("hand", device, step), optimizer


def make_optimizer(params, config: train.TrainConfig, ablate: set[str]) -> torch.optim.Optimizer:
    if "adam" in ablate:
        return torch.optim.Adam(list(params), lr=config.lr, foreach=False)
    return train.make_optimizer(params, config)


def check_same_step(
    loss_fn: Objective, vae: VAE, hand: HandVAE, x: torch.Tensor, seed: int
) -> float:
    """Both sides' loss and gradients on the batch ``x`` with the same noise ``eps`` (the
    same seed); returns the relative loss difference, raises when they disagree. A traced
    loss is recorded and checked first, so the suite's side is the trace the steps run."""
    pair = loss_fn.pair
    with pair.scope():
        if loss_fn.traced is not None or loss_fn.compiled is not None:
            for _ in range(2):  # record the trace (graph), then check it against the programs
                train.training_loss(loss_fn, (x,), 1.0, 0)
        torch.manual_seed(seed)
        suite_loss = train.training_loss(loss_fn, (x,), 1.0, 0)
        suite_loss.backward()
    torch.manual_seed(seed)
    hand_loss = hand(x)
    hand_loss.backward()
    a, b = float(suite_loss.detach()), float(hand_loss.detach())
    diff = abs(a - b) / max(abs(b), 1e-12)
    pairs = [
        *zip(vae.encoder.body.parameters(), hand.encoder.parameters()),
        *zip(vae.decoder.parameters(), hand.decoder.parameters()),
    ]
    grads_ok = all(
        torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5 * max(1.0, float(q.grad.abs().max())))
        for p, q in pairs
    )
    for p in [*pair.parameters(), *hand.parameters()]:
        p.grad = None
    if diff > 1e-5 or not grads_ok:
        raise UserError(
            f"the suite's step and the hand-written one disagree on the same batch and noise "
            f"(loss {a:.6g} vs {b:.6g}, gradients {'equal' if grads_ok else 'differ'}); "
            "the benchmark would not compare the same computation"
        )
    return diff


def interleave(sides: list[Side], clock: Callable[[], float], steps: int, repeats: int) -> None:
    """Warm every side up, then time ``repeats`` blocks of ``steps`` steps per side,
    interleaved: A B, then B A, so drift and warm caches hit all sides alike."""
    for side in sides:
        side.clock = clock
        side.block(WARMUP)
        side.times.clear()
    for r in range(repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:
            side.block(steps)


def compiled_figures(
    compiled: Side,
    hand_run: Side,
    batch_size: int,
    compiled_fn: Objective,
    config: train.TrainConfig,
    diff: float,
) -> dict[str, Any]:
    """The compiled side's timings against the hand-written side's, its relative loss
    difference ``diff`` in the check, and its compile status."""
    compiled_s, hand_s = statistics.median(compiled.times), statistics.median(hand_run.times)
    return {
        "compiled_ratio": compiled_s / hand_s,
        "compiled_paired_ratio": statistics.median(
            a / b for a, b in zip(compiled.times, hand_run.times)
        ),
        "compiled_ms": compiled_s * 1e3,
        "compiled_examples_per_s": batch_size / compiled_s,
        "compiled_loss_rel_diff": diff,
        "compile": train.compile_status(config, compiled_fn.compiled),
        "compile_seconds": compiled_fn.compiled.seconds,
    }


def models(
    batch_size: int, device: torch.device, x_dim: int, hidden: Sequence[int], latent: int, seed: int
) -> tuple[torch.Tensor, VAE, VAE, HandVAE]:
    """Random binary data of ``BATCHES_PER_EPOCH`` batches, the suite's VAE, its twin (the
    compiled side's weights: the same, trained apart) and the hand-written VAE with the
    same weights."""
    torch.manual_seed(seed)
    n = batch_size * BATCHES_PER_EPOCH
    x = torch.rand(n, x_dim, device=device).bernoulli()
    vae = VAE(x_dim, latent_dim=latent, hidden=tuple(hidden), likelihood="bernoulli").to(device)
    twin = copy.deepcopy(vae)
    hand = HandVAE(x_dim, hidden, latent).to(device).copy_from(vae)
    return x, vae, twin, hand


def bench_batch(
    batch_size: int,
    device: torch.device,
    steps: int,
    repeats: int,
    x_dim: int,
    hidden: Sequence[int],
    latent: int,
    seed: int,
    ablate: set[str],
    clock: str = "wall",
    compile: bool = False,
) -> dict:
    """One batch size: the check, then ``repeats`` interleaved blocks per side."""
    x, vae, twin, hand = models(batch_size, device, x_dim, hidden, latent, seed)
    config = train.TrainConfig(  # the sampled KL: the hand-written side's estimator
        batch_size=batch_size, seed=seed, device=str(device), jit="jit" not in ablate, elbo="trace"
    )
    suite, loss_fn, _ = suite_side(vae, x, config, ablate)
    hand_run, _ = hand_side(hand, x, config, ablate)
    diff = check_same_step(loss_fn, vae, hand, x[:batch_size], seed)
    sides = [suite, hand_run]
    if compile:
        compiled_config = dataclasses.replace(config, compile=True)
        compiled, compiled_fn, _ = suite_side(twin, x, compiled_config, ablate)
        compiled.name = "compiled"
        compiled_diff = check_same_step(compiled_fn, twin, hand, x[:batch_size], seed)
        sides.append(compiled)
    interleave(sides, CLOCKS[clock], steps, repeats)
    suite_s, hand_s = statistics.median(suite.times), statistics.median(hand_run.times)
    paired = statistics.median(a / b for a, b in zip(suite.times, hand_run.times))
    extra = {}
    if compile:
        extra = compiled_figures(
            compiled, hand_run, batch_size, compiled_fn, compiled_config, compiled_diff
        )
    return {
        "batch_size": batch_size,
        "device": str(device),
        "ratio": suite_s / hand_s,
        "paired_ratio": paired,  # median of the per-repeat ratios (robust to drift)
        "suite_ms": suite_s * 1e3,
        "hand_ms": hand_s * 1e3,
        "suite_examples_per_s": batch_size / suite_s,
        "hand_examples_per_s": batch_size / hand_s,
        "suite_peak_mb": suite.peak,
        "hand_peak_mb": hand_run.peak,
        "peak_memory": "cuda max_memory_allocated" if device.type == "cuda" else "process maxrss",
        "loss_rel_diff": diff,
        "jit": train.jit_status(config, loss_fn.traced),
        "clock": clock,
        "steps": steps,
        "repeats": repeats,
        "architecture": f"{x_dim}-{'-'.join(map(str, hidden))}-{latent}",
        "ablate": sorted(ablate),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        **extra,
    }


def run(
    batch_sizes: Sequence[int] = (16, 128, 1024),
    device: str = "auto",
    steps: int = 50,
    repeats: int = 5,
    x_dim: int = 784,
    hidden: Sequence[int] = (400,),
    latent: int = 20,
    seed: int = 0,
    ablate: Iterable[str] = (),
    clock: str = "wall",
    compile: bool = False,
    threads: int | None = None,
) -> list[dict]:
    """One record per batch size (see :func:`bench_batch`) with ``threads`` torch threads
    (None: as set); the medians are per step."""
    if threads is not None and threads < 1:
        raise UserError("--threads must be at least 1")
    if not hidden or min(hidden) < 1 or latent < 1 or x_dim < 1:
        raise UserError("--hidden, --latent and --x-dim must be positive")
    ablate = set(ablate)
    unknown = ablate - set(ABLATIONS)
    if unknown:
        raise UserError(f"unknown --ablate {', '.join(sorted(unknown))}; choose from {ABLATIONS}")
    if steps < 1 or repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise UserError("--steps, --repeats and every batch size must be at least 1")
    dev = train.resolve_device(device)
    if clock not in CLOCKS or (clock == "process" and dev.type == "cuda"):
        raise UserError("--clock is wall, or process (CPU seconds of this process) on the CPU")
    if threads is not None:
        torch.set_num_threads(threads)
    return [
        bench_batch(bs, dev, steps, repeats, x_dim, hidden, latent, seed, ablate, clock, compile)
        for bs in batch_sizes
    ]


def table(records: list[dict]) -> str:
    """The records as a fixed-width text table (with the compiled side's columns when
    they were measured, and a line per record whose loss was not compiled)."""
    head = ["batch", "suite ms", "hand ms", "ratio", "suite ex/s", "hand ex/s", "peak MB"]
    compiled = any("compiled_ms" in r for r in records)
    if compiled:
        head[4:4] = ["compiled ms", "c. ratio"]
    lines = [" ".join(f"{h:>11}" for h in head)]
    for r in records:
        peak = f"{r['suite_peak_mb']:.0f}/{r['hand_peak_mb']:.0f}"
        cells = [
            f"{r['batch_size']:>11}",
            f"{r['suite_ms']:>11.3f}",
            f"{r['hand_ms']:>11.3f}",
            f"{r['ratio']:>11.3f}",
            f"{r['suite_examples_per_s']:>11.0f}",
            f"{r['hand_examples_per_s']:>11.0f}",
            f"{peak:>11}",
        ]
        if compiled:
            cells[4:4] = [f"{r['compiled_ms']:>11.3f}", f"{r['compiled_ratio']:>11.3f}"]
        lines.append(" ".join(cells))
    for r in records:
        if compiled and r["compile"] != "compiled":
            lines.append(f"batch {r['batch_size']}: compile {r['compile']}")
    return "\n".join(lines)
