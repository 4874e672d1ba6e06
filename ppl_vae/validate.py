"""Option checks as pure functions: a value in, the value (normalised) out, or one
:class:`~ppl_vae.errors.UserError` naming the option, the value and the fix.

The CLI, :class:`~ppl_vae.infer.config.TrainConfig`'s fields and model building call
these, so a bad value is refused before any file is written. Bounds (refuse, never silently clip):

=====================  =======================================  ========================
option                 accepted                                 bound
=====================  =======================================  ========================
``--hidden``           widths ``w_i``, e.g. ``512,256``         ``1 <= w_i <= 65536``,
                                                                at most 64 layers
``--latent-dim``       whole number                             ``1 <= d <= 4096``
``--lr``, ``--beta``   finite real                              ``> 0``
``--lr-final``         finite real (a fraction of ``--lr``)     ``0 < f <= 1``
``--seed``             whole number                             ``0 <= s < 2**32``
                                                                (Pyro's seeds)
``--device``           ``auto``, ``cpu``, ``cuda``, ``cuda:N``
``--labels``           whole number                             ``1 <= n <= 2**31``
``analyze --draws``    whole number                             ``1 <= d <= 100000``
``--out``              a path that is UTF-8, each name          ``<= 255`` bytes
``--warmup-steps``     whole number                             ``0 <= t <= 10**9``
``--cycles``           whole number                             ``1 <= c <= 10**6``
``--epochs``           whole number                             ``1 <= e <= 10**6``
batch sizes            whole number                             ``1 <= b <= 2**20``
``--num-particles``    whole number                             ``1 <= k <= 4096``
``sample -n``          whole number                             ``1 <= n <= 100000``
``--chunk-size``       whole number                             ``1 <= c <= 65536``
``--iwae-samples``     whole number                             ``1 <= k <= 100000``
=====================  =======================================  ========================

``--set KEY=VALUE`` values are JSON (``2``, ``2.5``, ``[64]``, ``true``, ``"text"``;
anything else is refused), then checked against the model constructor's
signature: the key must be a parameter, the value must fit its annotation (or its
default's type), and ``x_dim`` is refused (it comes from the data).

Example::

    >>> hidden("512,256")
    (512, 256)
    >>> latent_dim(0)
    Traceback (most recent call last):
    ...
    ppl_vae.errors.UserError: --latent-dim must be at least 1, got 0
    >>> class M:
    ...     def __init__(self, x_dim: int, latent_dim: int = 2, likelihood: str = "bernoulli"):
    ...         pass
    >>> model_options(M, parse_set(["latent_dim=3", 'likelihood="gaussian:0.1"']))
    {'latent_dim': 3, 'likelihood': 'gaussian:0.1'}
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from ppl_vae.errors import UserError

MAX_WIDTH = 65536
MAX_LAYERS = 64
MAX_LATENT = 4096
#: Pyro seeds NumPy too, which takes seeds below 2**32.
MAX_SEED = 2**32
MAX_LABELS = 2**31
MAX_DRAWS = 100_000
#: The longest file name (one component of a path) Linux file systems hold.
MAX_NAME_BYTES = 255
MAX_STEPS = 10**9
MAX_CYCLES = 10**6
MAX_EPOCHS = 10**6
MAX_BATCH = 2**20
MAX_PARTICLES = 4096
MAX_SAMPLES = 100_000
MAX_CHUNK = 65536
MAX_IWAE = 100_000
#: Constructor arguments that come from elsewhere and may not be set by hand.
RESERVED = {
    "x_dim": "it comes from the data (the width of x_train)",
    "image_shape": "it comes from the data (the shape of its images)",
}


def flag(name: str) -> str:
    """``latent_dim`` -> ``--latent-dim`` (how the user wrote it)."""
    return name if name.startswith("-") else "--" + name.replace("_", "-")


def integer(name: str, value: Any, low: int, high: int | None = None) -> int:
    """A whole number in ``[low, high]``. Integral floats (``2.0``) pass; ``2.5``, text,
    booleans and None do not."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{flag(name)} must be a whole number, got {value!r}")
    if value < low:
        raise UserError(f"{flag(name)} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise UserError(f"{flag(name)} must be at most {high}, got {value}; use a smaller value")
    return value


def real(name: str, value: Any, positive: bool = True, high: float | None = None) -> float:
    """A finite real number, ``> 0`` when ``positive``, ``<= high`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{flag(name)} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{flag(name)} must be a finite number, got {value}")
    if positive and not value > 0:
        raise UserError(f"{flag(name)} must be positive, got {value}")
    if high is not None and value > high:
        raise UserError(f"{flag(name)} must be at most {high}, got {value}")
    return value


def hidden(spec: Any) -> tuple[int, ...]:
    """``"512,256"``, ``256`` or ``[512, 256]`` to a tuple of layer widths."""
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",")]
        if not spec.strip() or any(not re.fullmatch(r"-?[0-9]+", p) for p in parts):
            raise UserError(
                f"--hidden must be layer widths separated by commas, e.g. 512,256; got {spec!r}"
            )
        spec = [int(p) for p in parts]
    elif isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise UserError(f"--hidden must be layer widths such as 512,256; got {spec!r}")
    if len(spec) > MAX_LAYERS:
        raise UserError(f"--hidden has {len(spec)} layers; at most {MAX_LAYERS} are allowed")
    return tuple(integer("hidden", w, 1, MAX_WIDTH) for w in spec)


def latent_dim(value: Any) -> int:
    return integer("latent_dim", value, 1, MAX_LATENT)


def lr(value: Any) -> float:
    return real("lr", value)


def lr_final(value: Any) -> float:
    """The final learning rate of the cosine schedule as a fraction of ``--lr``."""
    return real("lr_final", value, high=1.0)


def beta(value: Any) -> float:
    return real("beta", value)


def seed(value: Any) -> int:
    return integer("seed", value, 0, MAX_SEED - 1)


def device(value: Any) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``meta`` and the rest hold no
    data to train on)."""
    if isinstance(value, str) and (
        value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d{1,3}", value)
    ):
        return value
    raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {value!r}")


def labels(value: Any) -> int:
    """``--labels N``: training labels to keep."""
    return integer("labels", value, 1, MAX_LABELS)


def draws(value: Any) -> int:
    """``analyze --draws``: guide draws per point."""
    return integer("draws", value, 1, MAX_DRAWS)


def out_path(value: Any, name: str = "--out") -> str:
    """A path ppl-vae will create and record: UTF-8 text (JSON and the report hold it),
    no NUL, each name at most :data:`MAX_NAME_BYTES` bytes."""
    text = str(value)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"{name} {text.encode('utf-8', 'surrogateescape')!r} is not UTF-8 text; "
            "choose a path of UTF-8 characters"
        ) from None
    if b"\x00" in encoded or not text:
        raise UserError(f"{name} must be a non-empty path")
    longest = max(len(part) for part in encoded.split(b"/"))
    if longest > MAX_NAME_BYTES:
        raise UserError(
            f"{name} has a name of {longest} bytes; file systems hold at most "
            f"{MAX_NAME_BYTES}; choose a shorter name"
        )
    return text


def warmup_steps(value: Any) -> int:
    return integer("warmup_steps", value, 0, MAX_STEPS)


def cycles(value: Any) -> int:
    return integer("cycles", value, 1, MAX_CYCLES)


def epochs(value: Any) -> int:
    return integer("epochs", value, 1, MAX_EPOCHS)


def batch_size(value: Any, name: str = "batch_size") -> int:
    return integer(name, value, 1, MAX_BATCH)


def num_particles(value: Any) -> int:
    return integer("num_particles", value, 1, MAX_PARTICLES)


def sample_count(value: Any) -> int:
    """``ppl-vae sample -n``."""
    return integer("-n", value, 1, MAX_SAMPLES)


def chunk_size(value: Any) -> int:
    """``ppl-vae evaluate --chunk-size`` (importance samples per chunk)."""
    return integer("chunk_size", value, 1, MAX_CHUNK)


def iwae_samples(value: Any) -> int:
    return integer("iwae_samples", value, 1, MAX_IWAE)


def capacity_max(value: Any) -> float:
    """The capacity objective's final C, in nats per example: finite, at least 0."""
    value = real("capacity_max", value, positive=False)
    if value < 0:
        raise UserError(f"--capacity-max must be at least 0 nats, got {value}")
    return value


def tolerance(name: str, value: Any) -> float:
    """A stopping tolerance (``--tolerance``, ``--grad-tolerance``): 0 (off) up to 1."""
    value = real(name, value, positive=False, high=1.0)
    if value < 0:
        raise UserError(f"{flag(name)} must be 0 (off) or positive, got {value}")
    return value


#: ``--optimizer`` names (:data:`ppl_vae.infer.config.OPTIMIZERS`).
OPTIMIZERS = (
    "adam",
    "adamw",
    "clipped_adam",
    "sgd",
    "adagrad",
    "rmsprop",
    "adagrad_rmsprop",
    "lbfgs",
)


def optimizer(value: Any) -> str:
    """``--optimizer``: one of :data:`OPTIMIZERS` (:mod:`ppl_vae.infer.optim`)."""
    if value not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {value!r}; choose one of {', '.join(OPTIMIZERS)}")
    return value


def nonnegative(name: str, value: Any, high: float | None = None) -> float:
    """A finite real at least 0 (and at most ``high``)."""
    value = real(name, value, positive=False, high=high)
    if value < 0:
        raise UserError(f"{flag(name)} must be 0 or positive, got {value}")
    return value


def lr_gamma(value: Any) -> float:
    """``--lr-gamma``: the factor of the decaying learning-rate schedules, in (0, 1]."""
    value = real("lr_gamma", value)
    if value > 1:
        raise UserError(f"--lr-gamma must lie in (0, 1], got {value}")
    return value


def betas(value: Any) -> list[float]:
    """``--betas``: Adam's two averaging rates, each in [0, 1)."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value
        )
    ):
        raise UserError(f"--betas takes two numbers in [0, 1), got {value!r}")
    return [float(b) for b in value]


def hidden_widths(value: Any) -> list[int]:
    """``--discriminator-hidden``: one or more layer widths."""
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(
            f"--discriminator-hidden takes layer widths such as 1000,1000, not {value!r}"
        )
    if len(value) > MAX_LAYERS:
        raise UserError(f"--discriminator-hidden has {len(value)} layers; at most {MAX_LAYERS}")
    return [integer("discriminator_hidden", w, 1, MAX_WIDTH) for w in value]


def milestones(value: Any) -> list[int]:
    """``--lr-milestones``: increasing step numbers."""
    if not isinstance(value, (list, tuple)):
        raise UserError(f"--lr-milestones takes step numbers, got {value!r}")
    steps = [integer("lr_milestones", m, 1, MAX_STEPS) for m in value]
    if steps != sorted(set(steps)):
        raise UserError(f"--lr-milestones must increase, got {steps}")
    return steps


def renyi_alpha(value: Any) -> float:
    """``--renyi-alpha``: the order of the Renyi bound; 1 is the ELBO itself."""
    alpha = real("renyi_alpha", value, positive=False)
    if alpha == 1:
        raise UserError("--renyi-alpha 1 is the ELBO itself: use --elbo trace")
    return alpha


def share(name: str, value: Any) -> float:
    """A weight in ``[0, 1]``."""
    value = real(name, value, positive=False, high=1.0)
    if value < 0:
        raise UserError(f"{flag(name)} must be between 0 and 1, got {value}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``true`` or ``false`` (a JSON boolean), nothing else."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return value


def parse_value(text: str, key: str = "VALUE") -> Any:
    """A ``--set`` value as JSON: ``2`` int, ``2.5`` float, ``[64, 32]`` list, ``true``
    bool, ``null`` None, ``"gaussian:0.1"`` text; anything else is refused in one line
    (``['r','t']`` is not JSON, and a value that silently stayed text would fail later
    as an unrelated error)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        reason = str(exc).split(":")[0]
        raise UserError(
            f"--set {key}={text} is not JSON ({reason}); --set takes JSON values: 2, 0.5, "
            f'true, [64, 32], "text" (in a shell: --set \'{key}="text"\')'
        ) from None


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["l1=0.1", "hidden=[64]"]`` -> ``{"l1": 0.1, "hidden": [64]}`` (``-`` in keys
    becomes ``_``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UserError(
                f"--set expects KEY=VALUE with KEY a constructor argument, got {item!r}"
            )
        out[key] = parse_value(value, key)
    return out


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def conforms(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (from JSON or a flag) fits a constructor annotation. Annotations
    this cannot read (strings that do not evaluate, custom classes) accept anything."""
    if annotation in (inspect.Parameter.empty, Any, object):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        )
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return not inner or all(conforms(v, inner[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def signature_types(cls: Any) -> dict[str, Any] | None:
    """Constructor parameter -> annotation (or the default's type where unannotated),
    without ``self``; ``**kwargs`` and ``*args`` are left out. ``cls`` may be a class or a
    factory function; None when the signature cannot be read or takes ``**kwargs``."""
    init = cls.__init__ if inspect.isclass(cls) else cls
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not evaluate: fall back to defaults
        hints = {}
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    out = {}
    for name, p in params.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = hints.get(name, inspect.Parameter.empty)
        if ann is inspect.Parameter.empty and p.default not in (inspect.Parameter.empty, None):
            ann = type(p.default)
        out[name] = ann
    return out


#: Value checks for constructor arguments every suite model shares.
KNOWN = {"latent_dim": latent_dim, "hidden": lambda v: list(hidden(v))}


def model_options(cls: type, options: Mapping[str, Any], model: str | None = None) -> dict:
    """Check constructor options (from ``--latent-dim``, ``--hidden``, ``--likelihood``,
    ``--set`` or a saved ``config.json``) against ``cls.__init__``; returns them normalised
    (``hidden`` as a list of ints, integral floats as ints)."""
    model = model or getattr(cls, "__name__", "model")
    params = signature_types(cls)
    out = {}
    for key, value in options.items():
        if key in RESERVED:
            raise UserError(f"--set {key} is not an option: {RESERVED[key]}; drop it")
        if params is None:  # **kwargs: the constructor itself decides
            out[key] = KNOWN[key](value) if key in KNOWN else value
            continue
        if key not in params:
            takes = ", ".join(sorted(p for p in params if p not in RESERVED)) or "no options"
            raise UserError(f"model {model} does not take {key}; it takes {takes}")
        ann = params[key]
        if key in KNOWN:
            value = KNOWN[key](value)
            if key == "hidden" and not conforms(value, ann) and len(value) == 1:
                value = value[0]  # a constructor taking one width (hidden: int)
            out[key] = value
            continue
        if not conforms(value, ann):
            raise UserError(
                f"--set {key}={json.dumps(value)} does not fit model {model}: {key} must be "
                f"{_type_name(ann)}, got {type(value).__name__}"
            )
        if ann is int and isinstance(value, float):
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--set {key} must be a finite number, got {value}")
        out[key] = value
    return out
