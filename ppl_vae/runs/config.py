"""The run's configuration record (``config.json``) and the resume policy's comparison.

:class:`RunConfig` says what to train on what: a model name (or ``.py`` path) with its
constructor arguments, a data source and the trainer's
:class:`~ppl_vae.infer.config.TrainConfig`, plus the hashes that make a run portable
(``model_sha256``, ``data_sha256``). :func:`read_config` reads a run's record;
:func:`resume_differences` lists every option a ``--resume`` gives that differs from the
saved run (only ``epochs`` may grow; device, progress, ``checkpoint_every``, ``jit`` and
``compile`` may change: :data:`RESUME_FREE`). Nothing here imports torch.

Example::

    >>> saved = RunConfig(model="vae", train=TrainConfig(epochs=3))
    >>> resume_differences(saved, RunConfig(model="ae", train=TrainConfig(epochs=5)))
    ['model vae -> ae']
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppl_vae import registry, validate
from ppl_vae.data.sources import TEST_BINARIZE_SEED, parse_binarize
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs import fingerprint
from ppl_vae.runs.rundir import RunDir

CONFIG = "config.json"
#: ``ppl-vae compare``'s defaults: the family, and larger batches than ``train``'s (32 and
#: 1e-3) so seven models finish in about a minute on two cores.
DEFAULT_MODELS = ("vae", "ae", "tanh-ae", "pca", "ppca", "sparse-ae", "denoising-ae")
DEFAULT_LATENT_DIM = 8
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 3e-3


@dataclass
class RunConfig:
    """What to train on what: a model name (or ``.py`` path) with its constructor
    arguments, a data source, and the trainer's :class:`~ppl_vae.infer.config.TrainConfig`."""

    model: str = "vae"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    binarize: str = "none"
    #: The seed of the test split's random preprocessing (dynamic binarisation): the data
    #: set's fixed draw, the same for every run whatever ``train.seed``; evaluation always
    #: reuses it. A config.json written before this field gets the same default, the
    #: draw every new run of its data set is scored on.
    test_binarize_seed: int = TEST_BINARIZE_SEED
    #: Keep only this many training labels (stratified); the rest become -1, as the
    #: semi-supervised M2 VAE expects. None keeps them all.
    labels: int | None = None
    #: ``--arg PARAM=ARRAY|VALUE``: what fills the programs' parameters besides the arrays
    #: of their own names (:mod:`ppl_vae.inputs`), as typed.
    inputs: dict[str, str] = field(default_factory=dict)
    #: ``--image-shape C,H,W``: the data view's shape per example, None: the data's own.
    image_shape: list[int] | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    #: The training settings the user gave explicitly (the CLI fills this); the model's
    #: recommended ``train_defaults`` replace the others. ``None``: apply none.
    train_explicit: list[str] | None = None
    #: A user's model file copied into the run (``model.py``) and its SHA-256.
    model_file: str | None = None
    model_sha256: str | None = None
    #: The SHA-256 of the data file (``--data FILE.npz``) the run was trained on.
    data_sha256: str | None = None
    #: What fed each of the programs' parameters (``array NAME``, ``constant VALUE``,
    #: ``input hook``, ``default``) for programs bound by name; None: ``(x[, y])``.
    bound: dict[str, str] | None = None
    #: The ``--elbo`` asked for when it was resolved at train time (``auto``: ``train.elbo``
    #: then holds the estimator it resolved to); None when ``train.elbo`` is what was asked.
    elbo_requested: str | None = None
    #: The options the user typed (the CLI fills this; not saved): on ``--resume`` only
    #: these are compared with the saved run. None: compare everything.
    given: list[str] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("given")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        names = {f.name for f in dataclasses.fields(cls)} - {"given"}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def is_user_file(self) -> bool:
        """Whether the model is a user's ``.py`` file rather than a suite or plug-in name."""
        return is_model_file(self.model)


def is_model_file(model: str) -> bool:
    return model not in registry.names() and (
        model.endswith(".py") or "/" in model or Path(model).exists()
    )


def read_config(run_dir: str | Path | RunDir) -> RunConfig:
    """The run's ``config.json``, read as a regular file inside the run (bounded in size and
    depth) and every field checked the way the command line checks it
    (:func:`check_saved`). A saved run never downloads: ``download`` is read as false."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = run.path / CONFIG
    if not os.path.lexists(path):
        raise UserError(f"{run.path} is not a run directory (no {CONFIG}); train into it first")
    try:
        body = run.read_json(CONFIG)
        if not isinstance(body, dict) or not isinstance(body.get("train", {}), dict):
            raise TypeError("expected a JSON object with a train object")
        cfg = RunConfig.from_dict(body)
        check_saved(cfg)
        return cfg
    except (UserError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a valid run configuration ({exc}); train again") from None


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_saved(cfg: RunConfig) -> None:
    """A saved run's fields, checked like the options that made them (a received
    ``config.json`` is input like any other): types, ranges, the training options through
    :meth:`TrainConfig.validate`. Sets ``download`` false: a saved run reads its data, it
    never fetches it or writes outside itself."""
    for name in ("model", "data", "binarize"):
        if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name):
            raise TypeError(f"{name} must be a non-empty string")
    if not isinstance(cfg.model_args, dict):
        raise TypeError("model_args must be an object")
    for name in ("inputs", "bound"):
        value = getattr(cfg, name)
        if value is None and name == "bound":
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise TypeError(f"{name} must be an object of strings")
    shape = cfg.image_shape
    if shape is not None and not (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise TypeError("image_shape must be 2 or 3 positive whole numbers or null")
    for name in ("data_root", "model_file"):
        if getattr(cfg, name) is not None and not isinstance(getattr(cfg, name), str):
            raise TypeError(f"{name} must be a string or null")
    for name in ("model_sha256", "data_sha256"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, str) and _HEX64.match(value)):
            raise TypeError(f"{name} must be a SHA-256 hex digest or null")
    if cfg.train_explicit is not None and not (
        isinstance(cfg.train_explicit, list) and all(isinstance(k, str) for k in cfg.train_explicit)
    ):
        raise TypeError("train_explicit must be a list of option names")
    if cfg.elbo_requested is not None and cfg.elbo_requested != "auto":
        raise TypeError("elbo_requested must be auto or null")
    if not isinstance(cfg.download, bool):
        raise TypeError("download must be true or false")
    cfg.download = False
    parse_binarize(cfg.binarize)
    cfg.test_binarize_seed = validate.integer(
        "test_binarize_seed", cfg.test_binarize_seed, 0, 2**63 - 1
    )
    if cfg.labels is not None:
        cfg.labels = validate.integer("labels", cfg.labels, 1, validate.MAX_LABELS)
    cfg.train.validate()


#: Training options that may change on --resume (``epochs`` may only grow).
RESUME_FREE = {
    "epochs",
    "device",
    "progress",
    "checkpoint_every",
    "schedule_epochs",
    "jit",
    "compile",
}


#: RunConfig fields that are bookkeeping, not options.
BOOKKEEPING = {
    "train",
    "train_explicit",
    "model_file",
    "model_sha256",
    "data_sha256",
    "bound",
    "elbo_requested",
    "given",
}


def same_model(saved: RunConfig, new: RunConfig) -> bool:
    """Whether ``new`` names the saved run's model: the same name, or a model file whose
    bytes hash to the run's ``model_sha256`` (read, never imported)."""
    if saved.model == new.model:
        return True
    if not saved.model_sha256 or not is_model_file(new.model):
        return False
    path = Path(new.model)
    return path.is_file() and fingerprint.sha256_file(path) == saved.model_sha256


def resume_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """Each option of ``new`` that differs from the saved run, as ``name saved -> new``.
    With ``new.given`` (the CLI) only the options the user typed are compared."""
    given = None if new.given is None else set(new.given)
    diffs = []
    if not same_model(saved, new):
        diffs.append(f"model {saved.model} -> {new.model}")
    for key in sorted(set(saved.model_args) | set(new.model_args)):
        if given is not None and key not in new.model_args:
            continue
        old, now = saved.model_args.get(key, "(default)"), new.model_args.get(key, "(default)")
        if old != now:
            diffs.append(f"{key} {old} -> {now}")
    for f in dataclasses.fields(RunConfig):
        name = f.name
        if name in BOOKKEEPING or name in ("model", "model_args"):
            continue
        if given is not None and name not in given:
            continue
        old, now = getattr(saved, name), getattr(new, name)
        if name == "data" and Path(str(now)).is_file():
            now = str(Path(now).resolve())
        if old != now:
            diffs.append(f"{name} {old} -> {now}")
    for f in dataclasses.fields(TrainConfig):
        name = f.name
        if name in RESUME_FREE or (given is not None and name not in given):
            continue
        old, now = getattr(saved.train, name), getattr(new.train, name)
        if name == "elbo" and now == "auto":  # the saved run records what auto resolved to
            continue
        if old != now:
            diffs.append(f"{name} {old} -> {now}")
    return diffs
