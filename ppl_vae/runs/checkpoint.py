"""Checkpoints as one explicit record: tensors in safetensors, everything else in JSON.

A checkpoint in a run directory is two files:

- ``checkpoint.json`` -- the record (epoch, step, history, optimizer hyper-parameters,
  ...) with every tensor replaced by a reference ``{"__tensor__": key}``, and the name
  and SHA-256 of the weights file it belongs to;
- ``checkpoint-<step>.safetensors`` -- the tensors (model weights, optimizer moments,
  RNG states).

Both go through :class:`~ppl_vae.runs.rundir.RunDir`: writes are atomic and recorded in the
run's manifest (the weights go to a temporary file that is renamed into place, then the
JSON is renamed over the old one -- the commit point -- then the old weights file is
removed), so a crash at any moment leaves either the old or the new checkpoint whole, and
the temporaries it leaves are removed at the next start. On load every name read from the
JSON must stay inside the run directory (``../victim/checkpoint-44.safetensors`` is
refused) and the weights must match their SHA-256. Nothing is unpickled.

Example::

    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> save(d, {"step": 3, "weights": {"w": torch.ones(2)}}).name
    'checkpoint.json'
    >>> load(d)["weights"]["w"]
    tensor([1., 1.])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ppl_vae.errors import UserError
from ppl_vae.runs import rundir
from ppl_vae.runs.rundir import RunDir

RECORD = "checkpoint.json"


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace each tensor in a nested dict/list by a reference, collecting it in ``tensors``.

    Dicts with non-string keys (a torch optimizer's ``state``) become
    ``{"__items__": [[key, value], ...]}`` so JSON keeps the key types.
    """
    if isinstance(obj, torch.Tensor):
        key = prefix.strip(".") or "tensor"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten(v, tensors, f"{prefix}{k}.") for k, v in obj.items()}
        return {"__items__": [[k, flatten(v, tensors, f"{prefix}{k}.")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten(v, tensors, f"{prefix}{i}.") for i, v in enumerate(obj)]
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: unflatten(v, tensors) for k, v in obj["__items__"]}
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def as_run(directory: str | Path | RunDir) -> RunDir:
    return directory if isinstance(directory, RunDir) else RunDir(directory)


def save(directory: str | Path | RunDir, record: dict[str, Any]) -> Path:
    """Write ``record`` (nested dicts/lists of JSON values and tensors) atomically into the
    run directory: the weights first, then ``checkpoint.json`` (the commit point), then the
    old weights file is removed. A :class:`RunDir` must be locked by the caller; a plain
    path is locked here."""
    run = as_run(directory)
    with run.lock():
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten(record, tensors)
        step = record.get("step", 0)
        weights = f"checkpoint-{int(step)}.safetensors"
        previous = _weights_name(run)
        if previous == weights:  # the same step again (a resumed run saving at once)
            previous = None
        with run.atomic_path(weights) as tmp:
            save_file(tensors, str(tmp))
        path = run.resolve(weights)
        body = {"weights": weights, "sha256": rundir.sha256_file(path), "record": skeleton}
        record_path = run.write_text(RECORD, json.dumps(body, indent=1) + "\n")
        if previous and previous in run.manifest():
            run.remove(previous)
        return record_path


def _weights_name(run: RunDir) -> str | None:
    try:
        body = json.loads(run.resolve(RECORD).read_text())
        name = body["weights"]
        return name if isinstance(name, str) else None
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return None


def exists(directory: str | Path | RunDir) -> bool:
    return (as_run(directory).path / RECORD).is_file()


def load(
    directory: str | Path | RunDir, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read the record written by :func:`save`, checking the weights against their hash.
    Every name the record holds must stay inside the run directory."""
    run = as_run(directory)
    record_path = run.path / RECORD
    if not record_path.is_file():
        raise UserError(
            f"no checkpoint in {run.path} (missing {RECORD}); train a model there first"
        )
    bad = f"{record_path} is not a ppl-vae checkpoint record"
    try:
        body = json.loads(run.resolve(RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{bad} ({exc}); train the run again") from None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("weights"), str)
        or not isinstance(body.get("sha256"), str)
        or "record" not in body
    ):
        raise UserError(f"{bad} (expected an object naming its weights); train the run again")
    weights = run.resolve(body["weights"])  # ../victim/... is refused here
    if not weights.is_file() or rundir.sha256_file(weights) != body["sha256"]:
        raise UserError(f"checkpoint weights {weights} are missing or do not match {record_path}")
    try:
        tensors = load_file(str(weights), device=str(map_location))
        return unflatten(body["record"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{bad} ({type(exc).__name__}: {exc}); train the run again") from None


class RunCheckpointer:
    """The run directory as :func:`~ppl_vae.infer.trainer.fit`'s checkpointer: ``restore``
    reads the run's checkpoint when resuming (every process reads it under torchrun),
    ``save`` writes one from rank 0 alone (every process learns if it failed). The caller
    holds the run's lock (:meth:`RunDir.lock`); nothing here takes it."""

    def __init__(self, run: RunDir, resume: bool = False):
        self.run, self.resume = run, resume

    def restore(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        return load(self.run, map_location=map_location) if self.resume else None

    def save(self, record: dict[str, Any]) -> None:
        from ppl_vae.infer import distributed

        distributed.on_main(save, self.run, record)
