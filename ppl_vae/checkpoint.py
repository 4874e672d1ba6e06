"""Checkpoints as one explicit record: tensors in safetensors, everything else in JSON.

A checkpoint in a run directory is two files:

- ``checkpoint.json`` -- the record (epoch, step, history, optimizer hyper-parameters,
  ...) with every tensor replaced by a reference ``{"__tensor__": key}``, and the name
  and SHA-256 of the weights file it belongs to;
- ``checkpoint-<step>.safetensors`` -- the tensors (model weights, optimizer moments,
  RNG states).

Writes are atomic: the weights go to a temporary file that is renamed into place, then
the JSON is renamed over the old one (the commit point), then the old weights file is
removed. A crash at any moment leaves either the old or the new checkpoint whole.
Nothing is unpickled on load.

Example::

    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> save(d, {"step": 3, "weights": {"w": torch.ones(2)}}).name
    'checkpoint.json'
    >>> load(d)["weights"]["w"]
    tensor([1., 1.])
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ppl_vae.errors import UserError

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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(directory: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (nested dicts/lists of JSON values and tensors) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(record, tensors)
    step = record.get("step", 0)
    weights = directory / f"checkpoint-{step}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".weights.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    previous = _weights_name(directory)
    body = {"weights": weights.name, "sha256": _sha256(weights), "record": skeleton}
    atomic_write_text(directory / RECORD, json.dumps(body, indent=1))
    if previous and previous != weights.name:
        (directory / previous).unlink(missing_ok=True)
    return directory / RECORD


def _weights_name(directory: Path) -> str | None:
    try:
        return json.loads((directory / RECORD).read_text())["weights"]
    except (OSError, ValueError, KeyError):
        return None


def exists(directory: str | Path) -> bool:
    return (Path(directory) / RECORD).is_file()


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read the record written by :func:`save`, checking the weights against their hash."""
    directory = Path(directory)
    record_path = directory / RECORD
    if not record_path.is_file():
        raise UserError(
            f"no checkpoint in {directory} (missing {RECORD}); train a model there first"
        )
    try:
        body = json.loads(record_path.read_text())
        weights = directory / body["weights"]
    except (ValueError, KeyError) as exc:
        raise UserError(f"{record_path} is not a ppl-vae checkpoint record ({exc})") from None
    if not weights.is_file() or _sha256(weights) != body.get("sha256"):
        raise UserError(f"checkpoint weights {weights} are missing or do not match {record_path}")
    tensors = load_file(str(weights), device=str(map_location))
    return unflatten(body["record"], tensors)
