"""The run's configuration: the record (``config.json``), the one resolution and the resume
comparison.

:class:`RunConfig` says what to train on what: a model name (or ``.py`` path) with its
constructor arguments, a data source and the trainer's
:class:`~ppl_vae.infer.config.TrainConfig`, plus the hashes that make a run portable
(``model_sha256``, ``data_sha256``). It is a frozen value. Its ``typed`` field is the one
record of what the user typed (flags, a ``--config`` file; None: every field): a model's
recommended settings replace only the others, ``--resume`` compares only those, and
``config.json``'s ``train_explicit`` lists its training options.

:func:`resolve` is the one place a job's configuration is made: what the user typed, the
saved run (``--resume``) and the model's recommended settings in, the configuration out,
validated once, with its computed fields (the schedule's span, the data file's path and
hash, the estimator ``--elbo auto`` resolved to). :func:`read_config` reads a run's
record; :func:`resume_differences` lists every option a ``--resume`` gives that differs
from the saved run (only ``epochs`` may grow; the fields marked ``resume_free`` may
change). Nothing here imports torch.

Example::

    >>> saved = RunConfig(model="vae", train=TrainConfig(epochs=3))
    >>> resume_differences(saved, RunConfig(model="ae", train=TrainConfig(epochs=5)))
    ['model vae -> ae']
    >>> typed = RunConfig(train=TrainConfig(lr=0.5), typed=frozenset({"epochs"}))
    >>> resolve(typed, recommended={"lr": 1.0, "epochs": 9}).train.lr
    1.0
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppl_vae import registry, validate
from ppl_vae.data.sources import TEST_BINARIZE_SEED, parse_binarize
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.recommend import yielding
from ppl_vae.runs import fingerprint, safeio
from ppl_vae.runs.rundir import RunDir

CONFIG = "config.json"
#: ``ppl-vae compare``'s defaults: the family, and larger batches than ``train``'s (32 and
#: 1e-3) so seven models finish in about a minute on two cores.
DEFAULT_MODELS = ("vae", "ae", "tanh-ae", "pca", "ppca", "sparse-ae", "denoising-ae")
DEFAULT_LATENT_DIM = 8
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 3e-3
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
#: The options ``config.json``'s ``train_explicit`` lists when typed: those set by a
#: ``--name VALUE`` flag (the switches ``--no-progress``, ``--no-jit``, ``--compile`` may
#: change on ``--resume`` and are left out, as they always were).
VALUE_OPTIONS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.metadata["cli"] == "flag"
)


@dataclass(frozen=True)
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
    #: The one record of what the user typed: the names of the fields (of this class and
    #: of :class:`TrainConfig`) given by a flag or a ``--config`` file; the constructor
    #: arguments given are ``model_args``' keys. None: every field (the Python API).
    typed: frozenset[str] | None = field(default=None, compare=False)

    @property
    def train_explicit(self) -> list[str] | None:
        """The training options typed (``config.json``'s ``train_explicit``)."""
        return None if self.typed is None else [k for k in VALUE_OPTIONS if k in self.typed]

    def to_dict(self) -> dict[str, Any]:
        out, whole = {}, dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name != "typed":
                out[f.name] = whole[f.name]
            if f.name == "train":  # where the record has always had it
                out["train_explicit"] = self.train_explicit
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        names = {f.name for f in dataclasses.fields(cls)} - {"typed"}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @property
    def is_user_file(self) -> bool:
        """Whether the model is a user's ``.py`` file rather than a suite or plug-in name."""
        return is_model_file(self.model)

    def was_typed(self, name: str) -> bool:
        return self.typed is None or name in self.typed


def is_model_file(model: str) -> bool:
    return model not in registry.names() and (
        model.endswith(".py") or "/" in model or Path(model).exists()
    )


# ----------------------------------------------------------------------------- resolve


def resolve(
    typed: RunConfig,
    saved: RunConfig | None = None,
    recommended: Mapping[str, Any] | None = None,
    choose: Callable[[TrainConfig], str] | None = None,
) -> RunConfig:
    """The job's configuration: ``typed`` (what the user typed over the command's
    defaults), continuing ``saved`` on ``--resume`` (its settings, the options typed
    compared with them; see :func:`resume_differences`), else with the model's
    ``recommended`` settings in place of the options not typed (:func:`yielding`). The
    training options are validated here, once; then the computed fields: the schedule's
    span (``schedule_epochs``), a data file's absolute path and SHA-256 and, with
    ``choose`` (the estimator the pair trains with, which also refuses a wrong
    ``meanfield``), what ``--elbo auto`` resolved to. Nothing is modified; the inputs are
    read, never written."""
    if saved is not None:
        return _resumed(typed, saved, choose)
    given = set(TRAIN_FIELDS) if typed.typed is None else typed.typed
    advice = yielding(dict(recommended or {}), given) if typed.typed is not None else {}
    train = typed.train.replace(**{k: v for k, v in advice.items() if k not in given})
    train.validate()  # the one check of the training options
    if train.schedule_epochs is None:
        train = _checked(train, schedule_epochs=train.epochs)
    train, requested = _chosen(train, choose)
    return typed.replace(train=train, elbo_requested=requested, **_data_facts(typed))


def _resumed(
    typed: RunConfig, saved: RunConfig, choose: Callable[[TrainConfig], str] | None
) -> RunConfig:
    """The saved run with the options ``--resume`` may change: the ``resume_free`` fields
    from ``typed``, ``epochs`` only where typed. The options typed are validated (on top
    of the saved ones) before they are compared, so a bad value reads as such."""
    free = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resume_free"]}
    take = {k for k in TRAIN_FIELDS if typed.was_typed(k)} | (free - {"epochs"})
    take -= {"schedule_epochs"} | ({"elbo"} if typed.train.elbo == "auto" else set())
    train = saved.train.replace(**{k: getattr(typed.train, k) for k in take}).validate()
    refuse_differences(resume_differences(saved, typed))
    span = saved.train.schedule_epochs or saved.train.epochs
    train = _checked(train, schedule_epochs=span)
    train, _ = _chosen(train, choose)
    return saved.replace(train=train, typed=None)


def refuse_differences(diffs: list[str]) -> None:
    """``--resume`` given options that differ from the saved run: one line listing them."""
    if diffs:
        raise UserError(
            f"--resume: options differ from the saved run: {'; '.join(diffs)}; drop them "
            "to continue that run, or start a new run with another --out"
        )


def _checked(train: TrainConfig, **derived: Any) -> TrainConfig:
    """A checked config with computed fields whose values are valid by construction."""
    out = train.replace(**derived)
    object.__setattr__(out, "_checked", True)
    return out


def _chosen(
    train: TrainConfig, choose: Callable[[TrainConfig], str] | None
) -> tuple[TrainConfig, str | None]:
    """``train`` with ``--elbo auto`` replaced by the estimator ``choose`` names, and
    ``"auto"`` (the record's ``elbo_requested``) when it was."""
    if choose is None or train.objective != "elbo":
        return train, None
    chosen = choose(train)  # refuses a wrong meanfield, auto or not
    if train.elbo != "auto":
        return train, None
    return _checked(train, elbo=chosen), "auto"


def _data_facts(cfg: RunConfig) -> dict[str, Any]:
    """A data file's absolute path (the run loads it from any working folder) and its
    SHA-256 (``--resume`` refuses a file that changed)."""
    if not Path(cfg.data).is_file():
        return {}
    path = str(Path(cfg.data).resolve())
    return {"data": path, "data_sha256": fingerprint.sha256_file(path)}


def seed_of(
    typed: RunConfig, saved: RunConfig | None = None, recommended: Mapping[str, Any] | None = None
) -> int:
    """The seed :func:`resolve` will choose, checked: the data and the model are built
    with it before the model's own recommendations are known."""
    if saved is not None:
        return saved.train.seed
    given = typed.was_typed("seed")
    return validate.seed(
        typed.train.seed if given else (recommended or {}).get("seed", typed.train.seed)
    )


# ------------------------------------------------------------------------- the record


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
        return check_saved(RunConfig.from_dict(body), body.get("train_explicit"))
    except (UserError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a valid run configuration ({exc}); train again") from None


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_inputs(inputs: Any, image_shape: Any, bound: Any = None) -> None:
    """The named-input fields (``--arg``, ``--image-shape``, the record of what fed each
    parameter) of a saved run or a config file: a TypeError naming the bad one."""
    for name, value in (("inputs", inputs), ("bound", bound)):
        if value is None and name == "bound":
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise TypeError(f"{name} must be an object of strings")
    if image_shape is not None and not (
        isinstance(image_shape, list)
        and len(image_shape) in (2, 3)
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_shape)
    ):
        raise TypeError("image_shape must be 2 or 3 positive whole numbers or null")


def check_saved(cfg: RunConfig, explicit: Any = None) -> RunConfig:
    """A saved run's fields, checked like the options that made them (a received
    ``config.json`` is input like any other): types, ranges, the training options through
    :meth:`TrainConfig.validate`. Returns it with ``download`` false: a saved run reads its
    data, it never fetches it or writes outside itself."""
    for name in ("model", "data", "binarize"):
        if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name):
            raise TypeError(f"{name} must be a non-empty string")
    if not isinstance(cfg.model_args, dict):
        raise TypeError("model_args must be an object")
    check_inputs(cfg.inputs, cfg.image_shape, cfg.bound)
    for name in ("data_root", "model_file"):
        if getattr(cfg, name) is not None and not isinstance(getattr(cfg, name), str):
            raise TypeError(f"{name} must be a string or null")
    for name in ("model_sha256", "data_sha256"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, str) and _HEX64.match(value)):
            raise TypeError(f"{name} must be a SHA-256 hex digest or null")
    if explicit is not None and not (
        isinstance(explicit, list) and all(isinstance(k, str) for k in explicit)
    ):
        raise TypeError("train_explicit must be a list of option names")
    if cfg.elbo_requested is not None and cfg.elbo_requested != "auto":
        raise TypeError("elbo_requested must be auto or null")
    if not isinstance(cfg.download, bool):
        raise TypeError("download must be true or false")
    parse_binarize(cfg.binarize)
    labels = cfg.labels
    return cfg.replace(
        download=False,
        test_binarize_seed=validate.integer(
            "test_binarize_seed", cfg.test_binarize_seed, 0, 2**63 - 1
        ),
        labels=None
        if labels is None
        else validate.integer("labels", labels, 1, validate.MAX_LABELS),
        train=cfg.train.validate(),
    )


# --------------------------------------------------------------------- the resume policy

#: Training options that may change on --resume (``epochs`` may only grow): the fields
#: marked ``resume_free``.
RESUME_FREE = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resume_free"]}

#: RunConfig fields that are bookkeeping, not options.
BOOKKEEPING = {
    "train",
    "model_file",
    "model_sha256",
    "data_sha256",
    "bound",
    "elbo_requested",
    "typed",
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
    With ``new.typed`` (the CLI) only the options the user typed are compared."""
    diffs = [] if same_model(saved, new) else [f"model {saved.model} -> {new.model}"]
    for key in sorted(set(saved.model_args) | set(new.model_args)):
        if new.typed is not None and key not in new.model_args:
            continue
        old, now = saved.model_args.get(key, "(default)"), new.model_args.get(key, "(default)")
        if old != now:
            diffs.append(f"{key} {old} -> {now}")
    for f in dataclasses.fields(RunConfig):
        name = f.name
        if name in BOOKKEEPING or name in ("model", "model_args") or not new.was_typed(name):
            continue
        old, now = getattr(saved, name), getattr(new, name)
        if name == "data" and Path(str(now)).is_file():
            now = str(Path(now).resolve())
        if old != now:
            diffs.append(f"{name} {old} -> {now}")
    for name in TRAIN_FIELDS:
        if name in RESUME_FREE or not new.was_typed(name):
            continue
        old, now = getattr(saved.train, name), getattr(new.train, name)
        if name == "elbo" and now == "auto":  # the saved run records what auto resolved to
            continue
        if old != now:
            diffs.append(f"{name} {old} -> {now}")
    return diffs


# ------------------------------------------------------------------ --config FILE

#: The largest ``--config`` file read (a config is a few hundred bytes).
CONFIG_FILE_LIMIT = 1 << 20
#: Keys of a config file besides the training options: the run's own fields (a run's
#: ``config.json`` is a config file), the flags' model shortcuts, and the record's
#: bookkeeping, each checked against the file it describes.
RUN_KEYS = ("model", "model_args", "data", "data_root", "download", "binarize", "labels")
RUN_KEYS += ("inputs", "image_shape")
RECORD_KEYS = ("test_binarize_seed", "train_explicit", "model_file", "model_sha256")
RECORD_KEYS += ("data_sha256", "elbo_requested", "bound")
MODEL_SHORTCUTS = ("latent_dim", "hidden", "likelihood")


def read_config_file(path: str | Path) -> RunConfig:
    """A ``--config`` file: TOML (``.toml``, read with :mod:`tomllib`) or JSON holding the
    same fields as the flags (``epochs = 5``, ``batch_size``/``batch-size``, ``model``,
    ``latent_dim``, ``data``, a ``[model_args]`` or ``[train]`` table), or a run's own
    ``config.json``. Returns the run it describes, ``typed`` naming what it sets (for a
    run's record: the training options that run's user typed). Unknown keys, wrong types,
    a link, a file over :data:`CONFIG_FILE_LIMIT`: one :class:`UserError`."""
    where = f"config file {path}"
    body = _parse_config(safeio.read_regular(path, CONFIG_FILE_LIMIT, "config file"), path)
    train = body.pop("train", {})
    if not isinstance(train, dict):
        raise UserError(f"{where}: train must be a table of training options")
    train = {**{k.replace("-", "_"): v for k, v in train.items()}}
    flat = {k.replace("-", "_"): v for k, v in body.items()}
    for key in list(flat):
        if key in TRAIN_FIELDS:
            train[key] = flat.pop(key)
    unknown = sorted(set(flat) - {*RUN_KEYS, *RECORD_KEYS, *MODEL_SHORTCUTS}) + sorted(
        set(train) - set(TRAIN_FIELDS)
    )
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r}; a config file holds the training flags' "
            "names (epochs, batch_size, ...), model, model_args and the data options"
        )
    run = _run_fields(flat, where)
    return _record(run, train, flat, where)


def _parse_config(raw: bytes, path: str | Path) -> dict[str, Any]:
    where = f"config file {path}"
    if str(path).endswith(".toml"):
        import tomllib

        try:
            body = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"{where} is not valid TOML ({str(exc)[:200]})") from None
        except RecursionError:
            body = None  # nested deeper than the parser goes: refused below
        if body is None or not safeio.json_depth_ok(body):
            raise UserError(f"{where} nests deeper than {safeio.JSON_DEPTH} levels")
    else:
        body = safeio.parse_json(raw, where)
    if not isinstance(body, dict):
        raise UserError(f"{where} must hold a table (TOML) or an object (JSON) of options")
    return body


def _run_fields(flat: dict[str, Any], where: str) -> dict[str, Any]:
    """The run's fields of a config file, each checked as its flag checks it."""
    run = {k: flat[k] for k in RUN_KEYS if k in flat}
    for name in ("model", "data", "binarize", "data_root"):
        value = run.get(name, "-")
        if not (isinstance(value, str) and value) and not (name == "data_root" and value is None):
            raise UserError(f"{where}: {name} must be a non-empty string")
    if "binarize" in run:
        parse_binarize(run["binarize"])
    if not isinstance(run.setdefault("model_args", {}), dict):
        raise UserError(f"{where}: model_args must be a table of constructor arguments")
    run["model_args"] = {**run["model_args"], **{k: flat[k] for k in MODEL_SHORTCUTS if k in flat}}
    if "download" in run:
        validate.boolean(f"{where}: download", run["download"])
    try:
        check_inputs(run.get("inputs", {}), run.get("image_shape"))
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from None
    if run.get("labels") is not None:
        run["labels"] = validate.labels(run["labels"])
    if "test_binarize_seed" in flat:
        seed = flat["test_binarize_seed"]
        run["test_binarize_seed"] = validate.integer("test_binarize_seed", seed, 0, 2**63 - 1)
    return run


def _record(run: dict, train: dict, flat: dict, where: str) -> RunConfig:
    """The run a config file describes, its record's bookkeeping honoured: the estimator
    ``auto`` chose is asked for as ``auto`` again, the schedule's span derived again, and
    the model file and data file must be the ones the record hashed."""
    try:
        check_saved(RunConfig.from_dict(flat), flat.get("train_explicit"))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None
    if flat.get("elbo_requested") == "auto":
        train["elbo"] = "auto"
    if "schedule_epochs" in train and train["schedule_epochs"] == train.get("epochs"):
        del train["schedule_epochs"]  # computed from epochs: flags that change it move it
    if flat.get("data_sha256") and "data" in run:
        fingerprint.check_fingerprint(run["data"], flat["data_sha256"])
    sha = flat.get("model_sha256")
    if (
        sha
        and Path(run.get("model", "")).is_file()
        and fingerprint.sha256_file(run["model"]) != sha
    ):
        raise UserError(f"{where}: model file {run['model']} changed since that run (sha256)")
    explicit = flat.get("train_explicit")
    typed = {*run, *(set(train) if explicit is None else set(explicit) & set(train))}
    typed -= {"model_args"}  # its keys are what it gives; "model" says the file names one
    return RunConfig(**run, train=TrainConfig.from_dict(train), typed=frozenset(typed))
