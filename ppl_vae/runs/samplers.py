"""A post-hoc sampler fitted to a run's codes, kept in the run directory.

``ppl-vae sample DIR --sampler gmm`` (or ``maf``) fits its density
(:mod:`ppl_vae.infer.samplers`) to the codes of the run's *training* set and stores it as two
files written in one commit (:meth:`~ppl_vae.runs.rundir.RunDir.commit`):
``samplers/<kind>.safetensors`` (the tensors) and ``samplers/<kind>.json`` (the record: its
settings, the checkpoint ``step`` whose codes it was fitted to, the weights' name and SHA-256,
and the held-out log-density of the test set's codes). A later call reuses it when the record
is for the same checkpoint step and settings, and fits it again (deterministically: a fixed
seed) otherwise or with ``--refit``. A record or tensors file that was edited or damaged is
refused with one line, never unpickled (there is nothing to unpickle).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from ppl_vae.errors import UserError
from ppl_vae.infer import samplers
from ppl_vae.runs import fingerprint
from ppl_vae.runs.checkpoint import WEIGHTS_LIMIT
from ppl_vae.runs.rundir import RunDir

FOLDER = "samplers"
#: Adam steps of the flow's fit (the tests shorten it).
MAF_STEPS = 500


def names(kind: str) -> tuple[str, str]:
    """The run's record and tensors files of a sampler ``kind``."""
    return f"{FOLDER}/{kind}.json", f"{FOLDER}/{kind}.safetensors"


def damaged(run: RunDir, name: str, why: str) -> UserError:
    kind = name.split("/")[-1].split(".")[0]
    return UserError(
        f"{run.path / name} {why} (edited or damaged); fit it again with --sampler {kind} --refit"
    )


def load(run: RunDir, kind: str) -> tuple[samplers.FittedSampler, dict[str, Any]] | None:
    """The sampler saved in ``run`` and its record; None when none is saved."""
    record_name, weights_name = names(kind)
    if not (run.path / record_name).exists() and not (run.path / record_name).is_symlink():
        return None
    record = run.read_json(record_name)
    fields = {"kind": str, "settings": dict, "weights": str, "sha256": str}
    if not isinstance(record, dict) or any(
        not isinstance(record.get(k), t) for k, t in fields.items()
    ):
        raise damaged(run, record_name, "is not a sampler record")
    if record["kind"] != kind or record["weights"] != weights_name:
        raise damaged(run, record_name, f"is not the {kind} sampler's record")
    data = run.read_bytes(weights_name, limit=WEIGHTS_LIMIT)
    if fingerprint.digest(data) != record["sha256"]:
        raise damaged(run, weights_name, "does not match the SHA-256 its record names")
    try:
        tensors = safetensors_load(data)
    except Exception:  # noqa: BLE001 -- any parse failure is one line
        raise damaged(run, weights_name, "is not a safetensors file") from None
    try:
        return samplers.from_state(kind, record["settings"], tensors), record
    except UserError as exc:
        raise damaged(run, weights_name, f"holds no valid sampler: {exc}") from None


def save(run: RunDir, sampler: samplers.FittedSampler, extra: dict[str, Any]) -> None:
    """Commit the tensors, then the record naming them (the commit point); ``run`` is
    locked by the caller."""
    record_name, weights_name = names(sampler.kind)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sampler.tensors.items()}
    with run.commit() as tx:
        sha = tx.write(weights_name, safetensors_save(tensors))
        record = {"kind": sampler.kind, "settings": sampler.settings, **extra}
        record.update(weights=weights_name, sha256=sha)
        tx.write(record_name, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode())


def reusable(record: dict[str, Any], settings: dict[str, Any], step: int | None) -> bool:
    """A saved sampler serves when it was fitted to this checkpoint with these settings."""
    saved = record["settings"]
    return record.get("step") == step and all(saved.get(k) == v for k, v in settings.items())


def fit(
    kind: str, codes: torch.Tensor, components: int = 10, covariance: str = "full"
) -> samplers.FittedSampler:
    """Fit the sampler ``kind`` to ``codes`` with the job's fixed seed (0)."""
    if kind == "gmm":
        return samplers.fit_gmm(codes, components, covariance, seed=0)
    return samplers.fit_maf(codes, steps=MAF_STEPS, seed=0)


def requested(kind: str, components: int, covariance: str) -> dict[str, Any]:
    """The settings a call asks of a saved sampler (the rest are the library's defaults)."""
    if kind == "gmm":
        return {"components": components, "covariance": covariance, "seed": 0}
    return {"seed": 0}
