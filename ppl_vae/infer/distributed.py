"""Several processes, one run: ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m ppl_vae train MODEL ...`` (or multi-node with torchrun's
``--nnodes``/``--node_rank``/``--rdzv_endpoint``) runs the ordinary trainer in N processes.
:func:`launch` (called by ``python -m ppl_vae``) reads torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and opens one process
group whose backend follows the tensors: gloo for CPU tensors, NCCL for CUDA tensors
(``cpu:gloo,cuda:nccl`` where CUDA is present). Outside torchrun every function here is a
no-op, so :func:`ppl_vae.infer.trainer.fit` runs unchanged in one process.

How a run is split (and why it equals one process with the same global batch):

- the programs are traced once by :class:`~ppl_vae.programs.Programs` (every parameter
  exists), then :func:`wrap` puts the :class:`~ppl_vae.infer.objective.Objective` in
  ``DistributedDataParallel``, which broadcasts rank 0's weights;
- every rank draws the *same* global permutation from the seeded shuffle generator and
  takes its slice of each global batch (:func:`shard`): ``--batch-size`` is the global
  batch, the plate only ever sees the rank's own examples and never subsamples;
- the trainer divides each rank's summed loss by its local batch size ``b_r`` and DDP
  averages gradients over the W ranks; the gradient is rescaled by ``b_r W / B`` (value
  unchanged), so the step is :math:`\\frac1B\\sum_{i \\in \\text{global batch}}\\nabla
  \\ell_i`, the single-process mean, also for a short last batch;
- each rank's sampling noise comes from its own stream, reseeded from (seed, epoch, rank)
  at every epoch (:func:`seed_epoch`), so a resumed run continues as if never stopped;
- rank 0 alone writes the run directory (:func:`on_main` runs a write there and tells the
  others whether it failed); every rank reads the same checkpoint on ``--resume``;
- evaluation is sharded by batch (:func:`my_batches`), each batch under its own seed, and
  the per-batch results are gathered (:func:`gather`) and summed in batch order: the same
  numbers as one process, up to the float rounding of a different thread count.

A rank that fails stops the others: a NaN reaches every rank through the summed running
loss (:func:`sum_across`), a failed write on rank 0 through :func:`on_main`, a crashed
process through its closed connections (gloo/NCCL raise, :func:`launch` names the cause)
and a hung one through the process-group timeout (``PPL_VAE_DIST_TIMEOUT`` seconds,
default 600).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import gc
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppl_vae.errors import UserError
from ppl_vae.ranks import (  # noqa: F401  (this module's API: rank and share of the work)
    active,
    batch_seed,
    gather,
    is_main,
    my_batches,
    progress,
    rank,
    world_size,
)

T = TypeVar("T")


TIMEOUT_ENV = "PPL_VAE_DIST_TIMEOUT"


DEFAULT_TIMEOUT = 600.0


_close_at_exit = None


EXIT_PEER_FAILED = 3


class RankFailure(UserError):
    """Another rank failed; this one stops with a message that names it."""


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def backend() -> str:
    """gloo for CPU tensors, and NCCL for CUDA tensors where a GPU is visible."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    return datetime.timedelta(seconds=seconds)


def init() -> None:
    """Open the process group from torchrun's environment (a no-op outside torchrun)."""
    if not launched() or dist.is_initialized():
        return
    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed; run without torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)  # "cuda" means this rank's GPU from here on
    # torch.distributed.nn.functional binds ``group=group.WORLD`` as default arguments when
    # it is first imported -- which DDP's constructor does, lazily. Imported while a group
    # is open, it holds that group for the life of the interpreter: destroy_process_group
    # then cannot free it, gloo's threads outlive close() and are torn down with the
    # interpreter (where a rank can abort: see close). Imported here, it binds None.
    importlib.import_module("torch.distributed.nn.functional")

    dist.init_process_group(backend(), timeout=timeout())
    global _close_at_exit
    if not _close_at_exit:  # a Python caller (train_run under torchrun) that never closes
        _close_at_exit = atexit.register(close)


def close() -> None:
    """Close the process group now, while the interpreter is whole (idempotent): free the
    group and join gloo's threads here, in the main thread.

    ``destroy_process_group`` only drops torch's own references to the group. Two more kept
    it alive after training, so its threads (``gloo_tcp_loop``, ``pt_gloo_runloop``) ran on
    into interpreter shutdown and the group was torn down there, in whatever order the
    interpreter clears modules -- where a rank could abort at exit (``terminate called
    without an active exception``, SIGABRT) after a run that succeeded: the import that
    :func:`init` now makes first, and the :class:`DistributedObjective` that trained, which
    holds the group through its reducer and sits in reference cycles (freed by whichever
    cycle collection comes next). Collecting them first leaves ``_world`` the group's last
    owner."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # DDP and its reducer (cycles) go now, not at interpreter shutdown
    dist.destroy_process_group()
    gc.collect()


def peer_failed(exc: BaseException) -> bool:
    """An error raised because another rank went away or timed out."""
    if isinstance(exc, RankFailure):
        return True
    kinds = tuple(getattr(dist, n) for n in ("DistError", "DistBackendError") if hasattr(dist, n))
    text = str(exc).lower()
    return isinstance(exc, kinds) or any(
        w in text for w in ("connection closed by peer", "connection reset", "timed out")
    )


def launch(main: Callable[[], int]) -> int:
    """Run ``main`` in this rank: open the process group, silence stdout on ranks other
    than 0, turn another rank's failure into one clear line, and always close the group."""
    if not launched():
        return main()
    try:
        init()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    here = f"rank {rank()} of {world_size()}"
    quiet = contextlib.nullcontext()
    if not is_main():
        quiet = contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115
    try:
        with quiet:
            return main()
    except Exception as exc:
        if not peer_failed(exc):
            raise
        print(f"error: {here} stopped: another rank failed or hung ({exc})", file=sys.stderr)
        return EXIT_PEER_FAILED
    finally:
        close()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and active():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def seed_epoch(seed: int, epoch: int) -> None:
    """Give this rank its own sampling stream for ``epoch`` (a no-op in one process)."""
    if active():
        torch.manual_seed((seed * 1_000_003 + epoch * 7919 + rank() + 1) % (1 << 63))


class DistributedObjective(DistributedDataParallel):
    """DDP around an :class:`~ppl_vae.infer.objective.Objective`: attributes of the objective
    (``elbo``, ``pair``) stay reachable, and the gradient of each rank's per-example mean
    is rescaled by ``b_r W / B`` (:attr:`global_batch` is ``B``, set by :func:`shard`) so
    that DDP's average is the mean over the global batch."""

    global_batch: int | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)

    def forward(self, *args: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        loss = super().forward(*args, **kwargs)
        if self.global_batch:
            factor = args[0].shape[0] * dist.get_world_size() / self.global_batch
            if factor != 1.0:  # the value stays the local mean; the gradient is rescaled
                loss = loss * factor + (loss * (1.0 - factor)).detach()
        return loss


def unused_parameters(objective: nn.Module, args: tuple) -> bool:
    """Whether one loss evaluation leaves some parameter without a gradient (DDP must then
    search for them each step). Runs under a forked RNG, so training draws are unchanged."""
    params = [p for p in objective.parameters() if p.requires_grad]
    devices = [p.device.index or 0 for p in params if p.device.type == "cuda"][:1]
    try:
        with torch.random.fork_rng(devices=devices):
            loss = objective(*args)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    except Exception:  # let the training step report the problem
        return True
    return any(g is None for g in grads)


def wrap(objective: nn.Module, example: tuple) -> nn.Module:
    """``objective`` in :class:`DistributedObjective` when distributed, else unchanged.
    Call it after the programs have been traced (their parameters exist)."""
    if not active():
        return objective
    device = next(objective.parameters()).device
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedObjective(
        objective,
        device_ids=ids,
        find_unused_parameters=unused_parameters(objective, example),
    )


def shard(
    batches: Iterable[torch.Tensor],
    objective: nn.Module | None = None,
    world: int | None = None,
    me: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(i, part)``: this rank's slice of global batch ``i`` (all of it in one process).

    Every rank iterates the same global batches (the same seeded permutation), so they take
    the same number of steps. A global batch with fewer examples than ranks is skipped, and
    ``i`` stays the global batch's own index, so what the epoch's plan says of batch ``i``
    (labelled or not: :class:`~ppl_vae.data.labels.EpochPlan`) is said of this part.
    ``world`` and ``me`` default to the process group's.
    """
    world = world_size() if world is None else world
    me = rank() if me is None else me
    for i, idx in enumerate(batches):
        if world == 1:
            yield i, idx
            continue
        if idx.shape[0] < world:
            continue
        if isinstance(objective, DistributedObjective):
            objective.global_batch = idx.shape[0]
        yield i, idx.tensor_split(world)[me]


def sum_across(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over ranks (a copy); a NaN on any rank reaches all of them."""
    if not active():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run ``fn`` on rank 0 only (a write to the run directory) and tell every rank whether
    it failed: rank 0 raises its own error, the others a :class:`RankFailure` naming it.
    Returns ``fn``'s result on rank 0 and ``None`` elsewhere; also a barrier."""
    if not active():
        return fn(*args, **kwargs)
    result, error = None, None
    if is_main():
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # reported to every rank below
            error = exc
    message = [f"{type(error).__name__}: {error}" if error is not None else None]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        raise RankFailure(f"rank 0 failed ({message[0]}); rank {rank()} stops too")
    return result


def main_share(value: torch.Tensor | None) -> torch.Tensor | None:
    """A saved sum over all ranks, restored so that the ranks' shares add up to it again:
    rank 0 takes it all, the others zero."""
    if value is None or is_main():
        return value
    return torch.zeros_like(value)


def check_in_sync(module: nn.Module) -> None:
    """Raise on every rank if the ranks' parameters differ (a per-tensor float64 checksum,
    gathered; DDP keeps them equal, so this guards against a program that changes its
    parameters outside the optimizer step)."""
    if not active():
        return
    params = list(module.parameters())
    if not params:
        return
    mine = torch.stack([p.detach().double().sum() for p in params]).cpu()
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    bad = [r for r, s in enumerate(every) if not torch.equal(s, every[0])]
    if bad:
        raise RankFailure(f"parameters differ between rank 0 and rank(s) {bad} after training")
