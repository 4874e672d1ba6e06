"""Which process of a run this is, and its share of the evaluation: the part of
:mod:`ppl_vae.infer.distributed` that measurements need, below every layer.

Outside ``torchrun`` (no process group with more than one rank) this is rank 0 of 1 and
every function is the identity or a no-op. Under it, evaluation is sharded by batch
(:func:`my_batches`: batch ``k`` on rank ``k % W``), each batch under its own seed
(:func:`batch_seed`), and the per-batch results are gathered (:func:`gather`) and summed in
batch order by the caller: the same numbers as one process, up to the float rounding of a
different thread count. Only rank 0 shows a progress bar (:func:`progress`).

    >>> (rank(), world_size(), is_main())
    (0, 1, True)
    >>> list(my_batches("ab"))
    [(0, 'a'), (1, 'b')]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

T = TypeVar("T")


def active() -> bool:
    """A process group with more than one rank is open."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the one rank that writes files and prints."""
    return rank() == 0


def progress(enabled: bool, **options: Any) -> tqdm:
    """A progress bar shown by rank 0 only (``enabled`` there), a silent one elsewhere.
    It starts no monitor thread: tqdm's monitor, started by every bar even a disabled one,
    would otherwise stay alive until the interpreter exits."""
    return _Bar(disable=not enabled or not is_main(), **options)


class _Bar(tqdm):
    monitor_interval = 0  # no "tqdm_monitor" thread (it only tunes miniters of slow loops)


def my_batches(items: Iterable[T]) -> Iterator[tuple[int, T]]:
    """``(k, item)`` for this rank's share of ``items``: item ``k`` goes to rank
    ``k % world_size`` (all of them in one process)."""
    world, me = world_size(), rank()
    for k, item in enumerate(items):
        if k % world == me:
            yield k, item


def gather(parts: dict[int, Any], device: torch.device | str) -> dict[int, Any]:
    """Merge every rank's ``{k: result}`` (tensors travel through the CPU and land on
    ``device``); the identity in one process."""
    if not active():
        return parts
    local = {k: _to(v, torch.device("cpu")) for k, v in parts.items()}
    merged: list[dict[int, Any]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(merged, local)
    return {k: _to(v, torch.device(device)) for d in merged for k, v in d.items()}


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def batch_seed(seed: int, k: int) -> int:
    """The evaluation seed of batch ``k``: ``seed`` itself for the first batch."""
    return (seed + k * 0x9E3779B1) % (1 << 63)
