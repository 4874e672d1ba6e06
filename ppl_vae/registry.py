"""Models by name (the suite in ``ppl_vae.models``, third-party entry points) or from a
user's own ``.py`` file, each turned into a Pyro ``model``/``guide`` pair.

A model file says what to build in whichever way a Pyro user would write it:

1. ``MODEL = X`` names a class or factory (its instances have ``model`` and ``guide``
   methods, or it returns a ``(model, guide)`` pair);
2. without ``MODEL``, exactly one class defined in the file with ``model`` and ``guide``
   methods (as in Pyro's VAE tutorial, which also defines its ``Encoder`` and ``Decoder``);
3. module-level functions ``model`` and ``guide`` (with ``pyro.param`` inside).

Constructor options come from ``--set key=value`` and, where the constructor takes them,
``x_dim`` (from the data), ``--latent-dim`` and ``--hidden``. The name of a suite model is
its file name with ``_`` written as ``-`` (``models/tanh_ae.py`` is ``tanh-ae``); other
packages add models through the entry-point group ``ppl_vae.models``.

Example::

    >>> "vae" in names()
    True
    >>> model, guide = build("vae", x_dim=64, latent_dim=3)
    >>> model.__self__.latent_dim
    3
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ppl_vae import models as suite
from ppl_vae.errors import UserError, first_line

ENTRY_POINTS = "ppl_vae.models"
WHAT_A_FILE_DEFINES = (
    "a model file must define MODEL = <class or factory>, or exactly one class with model "
    "and guide methods, or module-level functions model(x) and guide(x)"
)


@dataclass(frozen=True)
class Spec:
    """How to build one model: ``factory(**options)`` gives an object with ``model`` and
    ``guide`` (or the pair itself); ``origin`` names where it came from."""

    name: str
    factory: Callable[..., Any]
    origin: str
    doc: str = ""

    def accepted(self) -> set[str] | None:
        """The keyword arguments the factory takes (``None``: any, it has ``**kwargs``)."""
        try:
            params = inspect.signature(self.factory).parameters.values()
        except (TypeError, ValueError):
            return set()
        if any(p.kind == p.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def names() -> list[str]:
    """The suite's model names and those of installed plug-ins, sorted."""
    own = {m.name.replace("_", "-") for m in pkgutil.iter_modules(suite.__path__) if not m.ispkg}
    return sorted(own | set(_entry_points()))


def summary(name: str) -> str:
    """The first paragraph of a model's module docstring (or its class's), on one line."""
    doc = resolve(name).doc.strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


def _has_programs(obj: Any) -> bool:
    return callable(getattr(obj, "model", None)) and callable(getattr(obj, "guide", None))


def _functions_factory(model, guide):
    def pair():
        return model, guide

    return pair


def spec_of_module(module, name: str, origin: str) -> Spec:
    """The :class:`Spec` of an imported model file (see the module docstring)."""
    doc = inspect.getdoc(module) or ""
    target = getattr(module, "MODEL", None)
    if target is None:
        found = [
            c
            for c in vars(module).values()
            if inspect.isclass(c) and c.__module__ == module.__name__ and _has_programs(c)
        ]
        if len(found) == 1:
            target = found[0]
        elif (
            not found
            and callable(getattr(module, "model", None))
            and callable(getattr(module, "guide", None))
        ):
            hook = getattr(module, "batch_inputs", None)  # the file's per-batch input hook
            if callable(hook):
                module.model.batch_inputs = hook  # declared where programs declare theirs
            return Spec(name, _functions_factory(module.model, module.guide), origin, doc)
        else:
            names_found = ", ".join(c.__name__ for c in found)
            raise UserError(
                f"{origin}: {WHAT_A_FILE_DEFINES}; found {len(found)} classes with model and "
                f"guide{' (' + names_found + ')' if found else ''}: name one with MODEL = ..."
            )
    if not callable(target):
        raise UserError(f"MODEL in {origin} must be a class or a factory function")
    return Spec(name, target, origin, doc or inspect.getdoc(target) or "")


SELF_CONTAINED = (
    "a model file must be self-contained: ppl-vae copies only that file into the run; "
    "paste the module into the file, or install it as a package"
)


def load_file(path: str | Path, expected_sha256: str | None = None) -> Spec:
    """Run a user's model file and return its :class:`Spec`.

    The file's bytes are read once, checked against ``expected_sha256`` when given (a
    run's copy, whose hash was trusted), compiled from those bytes and executed: the path
    is never imported, so no ``__pycache__`` bytecode is read or written for it. A model
    file is self-contained: a sibling module it imports (``from utils.custom_mlp import
    MLP``, where ``utils/`` lies next to the file and is not installed) is refused with one
    line, since the run keeps only the file itself."""
    import hashlib

    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"model file {path} is a directory; pass the .py file that defines the model"
        )
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    path = path.resolve()
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if expected_sha256 is not None and hashlib.sha256(source).hexdigest() != expected_sha256:
        raise UserError(f"{path} changed since its hash was checked; ppl-vae will not run it")
    mod_name = f"ppl_vae_user_{path.stem}_{hashlib.sha256(source).hexdigest()[:12]}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(mod_name, None))
    module.__file__ = str(path)
    sys.modules[mod_name] = module
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except Exception as exc:
        del sys.modules[mod_name]
        missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
        top = (missing or "").split(".")[0]
        if top and ((path.parent / top).is_dir() or (path.parent / f"{top}.py").is_file()):
            raise UserError(
                f"{path} imports {missing}, a module next to it that is not installed; "
                f"{SELF_CONTAINED}"
            ) from None
        first = first_line(exc)
        raise UserError(f"could not import {path}: {type(exc).__name__}: {first}") from None
    return spec_of_module(module, str(path), str(path))


def resolve(name: str) -> Spec:
    """A suite or plug-in name (``vae``) or a path to a ``.py`` file, to its :class:`Spec`."""
    if name.endswith(".py") or "/" in name or Path(name).is_dir():
        return load_file(name)
    module_name = name.replace("-", "_")
    if importlib.util.find_spec(f"{suite.__name__}.{module_name}") is not None and (
        name in names()
    ):
        module = importlib.import_module(f"{suite.__name__}.{module_name}")
        return spec_of_module(module, name, f"models/{module_name}.py")
    plugins = _entry_points()
    if name in plugins:
        ep = plugins[name]
        try:
            target = ep.load()
        except Exception as exc:  # a broken plug-in names its package, in one line
            package = getattr(getattr(ep, "dist", None), "name", None) or ep.value
            raise UserError(
                f"model {name!r} of the installed package {package} cannot be loaded "
                f"(entry point {ep.value}: {type(exc).__name__}: {str(exc)[:200]}); "
                "reinstall or remove that package"
            ) from None
        doc = inspect.getdoc(sys.modules.get(getattr(target, "__module__", ""), None)) or ""
        return Spec(name, target, f"entry point {plugins[name].value}", doc)
    raise UserError(
        f"unknown model {name!r}; `ppl-vae models` lists the suite ({', '.join(names())}), "
        "or pass a path to a .py file that defines one"
    )


def accepted(name: str) -> set[str] | None:
    """The options a model takes (``None``: any)."""
    return resolve(name).accepted()


DATA_ARGS = ("x_dim", "image_shape")  # constructor arguments the data set supplies


def build(
    name: str,
    x_dim: int | None = None,
    image_shape: tuple[int, ...] | None = None,
    **options: Any,
) -> tuple[Callable, Callable]:
    """Instantiate a model and return its ``(model, guide)`` programs. ``x_dim`` and
    ``image_shape`` ``(C, H, W)`` come from the data and are passed where the constructor
    takes them; an option it does not take is a :class:`UserError`."""
    return instantiate(resolve(name), x_dim, image_shape, **options)


def instantiate(
    spec: Spec,
    x_dim: int | None = None,
    image_shape: tuple[int, ...] | None = None,
    **options: Any,
) -> tuple[Callable, Callable]:
    """:func:`build` for a model already resolved (a file is imported once per job)."""
    name = spec.name
    takes = spec.accepted()
    if takes is not None:
        unknown = set(options) - takes
        if unknown:
            shown = ", ".join(sorted(takes - set(DATA_ARGS))) or "no options"
            raise UserError(
                f"model {name} does not take {', '.join(sorted(unknown))}; it takes {shown}"
            )
    for key, value in (("x_dim", x_dim), ("image_shape", image_shape)):
        if value is not None and takes is not None and key in takes and key not in options:
            options = {key: tuple(value) if key == "image_shape" else value, **options}
    try:
        built = spec.factory(**options)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"building model {name} failed: {type(exc).__name__}: {exc}; check its options"
        ) from None
    if _has_programs(built):
        return built.model, built.guide
    if isinstance(built, tuple) and len(built) == 2 and all(callable(f) for f in built):
        return built
    raise UserError(
        f"{spec.origin}: the model built is neither an object with model and guide "
        "nor a (model, guide) pair; " + WHAT_A_FILE_DEFINES
    )
