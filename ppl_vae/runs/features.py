"""The feature classifier of a data set, trained on first use and cached per user.

:func:`feature_network` returns the :class:`~ppl_vae.measure.features.FeatureNet` of a
labelled data set and its record. It looks in the cache folder -- ``$PPL_VAE_CACHE_DIR``,
else ``$XDG_CACHE_HOME/ppl-vae``, else ``~/.cache/ppl-vae`` -- for
``features-<fingerprint>.json`` (the record: data set, fingerprint, code version, test
accuracy, shapes, the SHA-256 of the weights) and ``features-<fingerprint>.safetensors``.
Both are read as regular files only (no symlink followed, bounded), the weights checked
against the record's hash and parsed by safetensors (nothing is unpickled), then loaded
strictly into a fresh network. A missing, corrupt, tampered or mismatched pair is
retrained (deterministically, a few seconds) and replaced by atomic renames (weights first,
then the record that vouches for them). A cache folder that cannot be written costs
nothing but the reuse: the network trained in memory is used, and the record says so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from ppl_vae.errors import UserError, first_line
from ppl_vae.measure import features
from ppl_vae.runs import atomic, fingerprint, safeio

#: The environment variable that moves the cache (tests point it at a temporary folder).
CACHE_ENV = "PPL_VAE_CACHE_DIR"

#: The largest cached weights file read (the mnist network is ~1 MiB).
WEIGHTS_LIMIT = 256 * 2**20


def cache_dir() -> Path:
    """``$PPL_VAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ppl-vae``, else ``~/.cache/ppl-vae``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ppl-vae"


def _expected(name: str, fp: str, x_dim: int, classes: int) -> dict[str, Any]:
    return {
        "kind": "ppl-vae feature classifier",
        "code_version": features.CODE_VERSION,
        "data": name,
        "fingerprint": fp,
        "x_dim": x_dim,
        "classes": classes,
        "feature_dim": features.FEATURES,
    }


def _load(folder: Path, stem: str, expected: dict[str, Any]) -> tuple[Any, dict] | None:
    """The cached network and record, or None when either file is missing or does not
    match (a wrong key, a bad hash, weights that do not fit)."""
    try:
        record = safeio.read_json(folder / f"{stem}.json", 2**20, "feature cache record")
        if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
            return None
        data = safeio.read_regular(folder / f"{stem}.safetensors", WEIGHTS_LIMIT, "weights")
        if fingerprint.digest(data) != record.get("weights_sha256"):
            return None
        net = features.FeatureNet(expected["x_dim"], expected["classes"])
        net.load_state_dict(safetensors_load(data), strict=True)
    except (UserError, SafetensorError, RuntimeError, ValueError, KeyError, TypeError, OSError):
        return None  # SafetensorError: bytes that do not parse; RuntimeError: do not fit
    return net.eval(), record


def _store(folder: Path, stem: str, net: Any, record: dict[str, Any]) -> str | None:
    """Write the weights, then the record; the reason when the folder cannot take them."""
    data = safetensors_save({k: v.contiguous() for k, v in net.state_dict().items()})
    record["weights_sha256"] = fingerprint.digest(data)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.replace(folder, f"{stem}.safetensors", data)
        atomic.replace(folder, f"{stem}.json", json.dumps(record, indent=2).encode())
    except OSError as exc:
        return f"not cached: cannot write in {folder} ({first_line(exc)}); set {CACHE_ENV}"
    return None


def feature_network(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    folder: str | Path | None = None,
) -> tuple[features.FeatureNet, dict[str, Any]]:
    """The feature classifier of the data set ``name`` with these splits (class ids in
    ``y_*``), from the cache or trained now and cached; the record holds ``cache``
    (``"hit"``, ``"trained"`` or the reason it was not cached) and ``path``."""
    folder = Path(folder) if folder is not None else cache_dir()
    fp = features.fingerprint(name, [x_train, y_train, x_test, y_test])
    classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    expected = _expected(name, fp, int(x_train.shape[1]), classes)
    stem = f"features-{fp[:24]}"
    found = _load(folder, stem, expected)
    if found is not None:
        net, record = found
        return net, {**record, "cache": "hit", "path": str(folder / f"{stem}.json")}
    start = time.perf_counter()
    net, acc = features.train_classifier(x_train, y_train, x_test, y_test)
    record = {
        **expected,
        "epochs": features.EPOCHS,
        "seed": features.SEED,
        "test_accuracy": acc,
        "train_seconds": time.perf_counter() - start,
    }
    note = _store(folder, stem, net, record)
    return net, {**record, "cache": note or "trained", "path": str(folder / f"{stem}.json")}
