"""Checkpoints as one explicit record: tensors in safetensors, everything else in JSON.

A checkpoint in a run directory is two files:

- ``checkpoint.json`` -- the record (epoch, step, history, optimizer hyper-parameters,
  ...) with every tensor replaced by a reference ``{"__tensor__": key}``, and the name
  and SHA-256 of the weights file it belongs to;
- ``checkpoint-<step>.safetensors`` -- the tensors (model weights, optimizer moments,
  RNG states).

Both are written as one commit of :class:`~ppl_vae.runs.rundir.RunDir` (each hashed once as
it is written, the manifest written once; the weights are renamed into place, then the
JSON over the old one -- the commit point -- then the old weights file is removed), so a
crash at any moment leaves either the old or the new checkpoint whole, and the
temporaries it leaves are removed at the next start. A resume reads and hashes the weights
once: the record its checks loaded (``load(..., keep=True)``) is the one
:class:`RunCheckpointer` restores. On load every name read from the
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
import os
import re
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from ppl_vae.errors import UserError, first_line
from ppl_vae.runs import fingerprint, safeio
from ppl_vae.runs.rundir import RunDir

RECORD = "checkpoint.json"
JSON_SCALARS = (str, int, float, bool, type(None))
#: The names of a checkpoint's weights files.
WEIGHTS = re.compile(r"checkpoint-\d+\.safetensors")
T = TypeVar("T")


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace each tensor in a nested dict/list by a reference, collecting it in ``tensors``.

    Dicts with non-string keys (a torch optimizer's ``state``) become
    ``{"__items__": [[key, value], ...]}`` so JSON keeps the key types.
    """
    if isinstance(obj, JSON_SCALARS):  # most of a record: the history's numbers
        return obj
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
    """Write ``record`` (nested dicts/lists of JSON values and tensors) into the run
    directory as one commit (:meth:`RunDir.commit`): the weights, then ``checkpoint.json``
    naming them with their hash (the commit point), each hashed once as it is written, the
    manifest written once; then the old weights files go. A :class:`RunDir` must be locked
    by the caller; a plain path is locked here."""
    run = as_run(directory)
    with run.lock():
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten(record, tensors)
        weights = f"checkpoint-{int(record.get('step', 0))}.safetensors"
        # The old weights: those in the manifest (ppl-vae wrote them) but the new ones, read
        # there rather than from the old record (7 ms of JSON at 300 epochs); a file a crash
        # left between the weights and the record goes too.
        old = [name for name in run.manifest() if WEIGHTS.fullmatch(name) and name != weights]
        with run.commit(remove=old) as tx:
            sha = tx.write(weights, safetensors_save(tensors))
            body = {"weights": weights, "sha256": sha, "record": skeleton}
            # Compact: indent= makes json use its pure-Python encoder (a third of a save once
            # the history is 300 epochs long, ppca's default).
            tx.write(RECORD, (json.dumps(body, separators=(",", ":")) + "\n").encode())
        return tx.staged[RECORD].path


def _weights_name(run: RunDir) -> str | None:
    try:
        name = run.read_json(RECORD)["weights"]
        return name if isinstance(name, str) else None
    except (KeyError, TypeError, UserError):
        return None


def files(directory: str | Path | RunDir) -> list[str]:
    """The names of the run's checkpoint: its weights, then its record (the order in which
    a roll-back puts them back, so that the record never names missing weights); none
    without a checkpoint."""
    run = as_run(directory)
    if not exists(run):
        return []
    weights = _weights_name(run)
    return [weights, RECORD] if weights is not None else [RECORD]


def exists(directory: str | Path | RunDir) -> bool:
    return (as_run(directory).path / RECORD).is_file()


def recorded_step(directory: str | Path | RunDir) -> int | None:
    """The step of the checkpoint the run holds now, read from ``checkpoint.json`` alone
    (no weights); None without a readable one. Results written from a checkpoint
    (``evaluation.json``, ``analysis/report.json``) record it as their ``step``."""
    try:
        step = as_run(directory).read_json(RECORD)["record"]["step"]
    except (KeyError, TypeError, UserError):
        return None
    ok = isinstance(step, int) and not isinstance(step, bool) and 0 <= step < COUNT_LIMIT
    return step if ok else None


def read_at_step(directory: str | Path | RunDir, read: Callable[[], T]) -> tuple[T, int | None]:
    """``read()`` (a function loading the run) and the step of the checkpoint it loaded,
    which the results written from it record (``evaluation.json``, ``analysis/report.json``,
    ``calibration.json``, ``disentanglement.json``); a checkpoint replaced while it was read
    (a training run saving) is refused."""
    step = recorded_step(directory)
    out = read()
    if recorded_step(directory) != step:
        raise UserError(
            f"the checkpoint in {as_run(directory).path} changed while it was read (a training "
            "run is saving there); run this again once it has stopped"
        )
    return out, step


#: The largest weights file a checkpoint may name (read whole, hashed, then parsed).
WEIGHTS_LIMIT = 16 * 2**30


#: The largest safetensors header (the JSON table of tensor names, dtypes and offsets).
HEADER_LIMIT = 64 * 2**20


#: Steps and epochs beyond this are not counts a run reached (floats lose integers here).
COUNT_LIMIT = 2**53


#: Records loaded with ``keep=True``, by run, with the identity of the files they came from.
_KEPT: weakref.WeakKeyDictionary[RunDir, tuple[tuple, dict[str, Any]]] = weakref.WeakKeyDictionary()


def _identity(run: RunDir, weights: str | None) -> tuple:
    """What says the checkpoint's files are the ones read (a save renames new ones in)."""
    names = [RECORD] if weights is None else [RECORD, weights]
    try:
        stats = [os.lstat(run.path / name) for name in names]
    except OSError:
        return ()
    return tuple((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


def load(
    directory: str | Path | RunDir, map_location: str | torch.device = "cpu", keep: bool = False
) -> dict[str, Any]:
    """Read the record written by :func:`save`, checking the weights against their hash.
    Every name the record holds must stay inside the run directory; the files are read
    only as regular files, bounded in size, and the record's fields are checked
    (:func:`check_record`): any failure is one :class:`UserError` line.

    With ``keep`` the record is also kept for the run's :class:`RunCheckpointer`, which
    then restores it without reading the weights again (a resume checks the checkpoint
    when it starts and trains from it: one read and one hash of the weights per job)."""
    run = as_run(directory)
    weights, identity, record = _read(run)
    if keep:
        _KEPT[run] = (weights, identity, record)
    if str(map_location) != "cpu":
        record = _to(record, map_location)
    return record


def _kept(run: RunDir, map_location: str | torch.device) -> dict[str, Any] | None:
    """The record :func:`load` kept for ``run`` (given up here), if its files are the ones
    on disk still; else None."""
    weights, identity, record = _KEPT.pop(run, ("", (), None))
    if record is None or not identity or _identity(run, weights) != identity:
        return None
    return record if str(map_location) == "cpu" else _to(record, map_location)


def _read(run: RunDir) -> tuple[str, tuple, dict[str, Any]]:
    """:func:`load`'s reading and checks: the weights' name, the identity of the files
    (taken before they are read) and the record."""
    record_path = run.path / RECORD
    if not os.path.lexists(record_path):
        raise UserError(
            f"no checkpoint in {run.path} (missing {RECORD}); train a model there first"
        )
    bad = f"{record_path} is not a ppl-vae checkpoint record"
    try:
        body = run.read_json(RECORD)
    except UserError as exc:
        raise UserError(f"{bad} ({exc}); train the run again") from None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("weights"), str)
        or not isinstance(body.get("sha256"), str)
        or "record" not in body
    ):
        raise UserError(f"{bad} (expected an object naming its weights); train the run again")
    weights = run.resolve(body["weights"])  # ../victim/... is refused here
    identity = _identity(run, body["weights"])
    try:
        data = safeio.read_regular(run._lexical(body["weights"]), WEIGHTS_LIMIT, "weights")
    except UserError as exc:
        raise UserError(f"checkpoint weights {weights} cannot be used ({exc})") from None
    if fingerprint.digest(data) != body["sha256"]:
        raise UserError(f"checkpoint weights {weights} are missing or do not match {record_path}")
    tensors = parse_weights(data, weights)
    try:
        record = unflatten(body["record"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{bad} ({type(exc).__name__}: {exc}); train the run again") from None
    check_record(record, bad)
    return body["weights"], identity, record


def parse_weights(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes: its header bounded and checked first
    (a header claiming 2^40 elements is refused, nothing allocated), every failure of the
    parser one line. Never unpickles."""
    bad = f"checkpoint weights {path} are not a safetensors file"
    if len(data) < 8:
        raise UserError(f"{bad} (only {len(data)} bytes); train the run again")
    n = int.from_bytes(data[:8], "little")
    if n > min(HEADER_LIMIT, len(data) - 8):
        raise UserError(f"{bad} (its header claims {n} bytes); train the run again")
    header = safeio.parse_json(data[8 : 8 + n], f"the header of {path}")
    body = len(data) - 8 - n
    if not isinstance(header, dict):
        raise UserError(f"{bad} (its header is not an object); train the run again")
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
            count = 1
            for d in info["shape"]:
                if not isinstance(d, int) or d < 0:
                    raise ValueError(f"shape {info['shape']}")
                count *= d
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= body):
                raise ValueError(f"offsets {start}..{end} outside {body} bytes")
            if count > end - start:  # every dtype takes at least one byte per element
                raise ValueError(f"{count} elements in {end - start} bytes")
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{bad} (tensor {key!r}: {exc}); train the run again") from None
    try:
        return safetensors_load(data)
    except Exception as exc:  # SafetensorError and whatever else the parser raises
        first = first_line(exc)
        raise UserError(f"{bad} ({first[:200]}); train the run again") from None


def check_record(record: Any, bad: str) -> None:
    """The fields of a checkpoint record, checked like options: counts are whole numbers
    in range, the history is a list of records as long as the epochs, a mid-epoch position
    comes with its running loss, the weights are finite."""
    if not isinstance(record, dict):
        raise UserError(f"{bad} (its record is not an object); train the run again")

    def count(name: str) -> int | None:
        if name not in record:
            return None
        v = record[name]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < COUNT_LIMIT:
            raise UserError(f"{bad} ({name} {v!r} is not a count); train the run again")
        return v

    step, epoch, position = count("step"), count("epoch"), count("position")
    if "history" in record:
        history = record["history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise UserError(f"{bad} (history is not a list of records); train the run again")
        if epoch is not None and epoch != len(history):
            raise UserError(
                f"{bad} (epoch {epoch} but {len(history)} history records); train the run again"
            )
    if position and not isinstance(record.get("running"), torch.Tensor):
        raise UserError(f"{bad} (position {position} without its running loss); train again")
    if step is not None and position is not None and position > step:
        raise UserError(f"{bad} (position {position} past step {step}); train the run again")
    if "seconds" in record:
        v = record["seconds"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise UserError(f"{bad} (seconds {v!r}); train the run again")
    module = record.get("module")
    if module is not None:
        if not isinstance(module, dict):
            raise UserError(f"{bad} (module is not a table of tensors); train the run again")
        for key, t in module.items():
            if not isinstance(t, torch.Tensor):
                raise UserError(f"{bad} (module.{key} is not a tensor); train the run again")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise UserError(
                    f"{bad}: its weight {key} holds NaN or infinite values; train the run again"
                )
    rng = record.get("rng")
    if rng is not None and not (
        isinstance(rng, dict)
        and all(isinstance(rng.get(k), torch.Tensor) for k in ("torch", "shuffle"))
    ):
        raise UserError(f"{bad} (rng is not a set of generator states); train the run again")


def _to(obj: Any, device: str | torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to(v, device) for v in obj]
    return obj


class RunCheckpointer:
    """The run directory as :func:`~ppl_vae.infer.trainer.fit`'s checkpointer: ``restore``
    reads the run's checkpoint when resuming (every process reads it under torchrun),
    ``save`` writes one from rank 0 alone (every process learns if it failed). The caller
    holds the run's lock (:meth:`RunDir.lock`); nothing here takes it."""

    def __init__(self, run: RunDir, resume: bool = False):
        self.run, self.resume = run, resume

    def restore(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        if not self.resume:
            return None
        return _kept(self.run, map_location) or load(self.run, map_location=map_location)

    def save(self, record: dict[str, Any]) -> None:
        from ppl_vae.infer import distributed

        distributed.on_main(save, self.run, record)
