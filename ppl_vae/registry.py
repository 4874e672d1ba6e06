"""Find models by name (the files of ``models/``) or load a user's own ``.py`` program.

A model file defines a subclass of :class:`~ppl_vae.autoencoder.Autoencoder` and names it
``MODEL = ClassName``. A file without ``MODEL`` works too when it defines exactly one such
class. The name of a suite model is its file name with ``_`` written as ``-``
(``models/tanh_ae.py`` is ``tanh-ae``).

Example::

    >>> "vae" in names()
    True
    >>> build("vae", x_dim=64, latent_dim=3).latent_dim
    3
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from typing import Any

import models as suite
from ppl_vae.autoencoder import Autoencoder
from ppl_vae.errors import UserError


def names() -> list[str]:
    """The suite's model names, sorted."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(suite.__path__))


def summary(name: str) -> str:
    """The first line of a model class's docstring (or its module's)."""
    cls = resolve(name)
    doc = inspect.getdoc(sys.modules[cls.__module__]) or inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _model_class(module, origin: str) -> type[Autoencoder]:
    cls = getattr(module, "MODEL", None)
    if cls is None:
        found = [
            c
            for c in vars(module).values()
            if inspect.isclass(c)
            and issubclass(c, Autoencoder)
            and c is not Autoencoder
            and c.__module__ == module.__name__
        ]
        if len(found) != 1:
            raise UserError(
                f"{origin} must define MODEL = <class> (a subclass of "
                f"ppl_vae.autoencoder.Autoencoder with model and guide); found {len(found)} "
                "candidate classes"
            )
        cls = found[0]
    if not (inspect.isclass(cls) and issubclass(cls, Autoencoder)):
        raise UserError(f"MODEL in {origin} must be a subclass of ppl_vae.autoencoder.Autoencoder")
    return cls


def load_file(path: str | Path) -> type[Autoencoder]:
    """Import a user's model file and return its model class."""
    path = Path(path).resolve()
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    mod_name = f"ppl_vae_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise UserError(f"could not import {path}: {type(exc).__name__}: {exc}") from None
    return _model_class(module, str(path))


def resolve(name: str) -> type[Autoencoder]:
    """A suite name (``vae``) or a path to a ``.py`` file, to its model class."""
    if name.endswith(".py") or "/" in name:
        return load_file(name)
    if name not in names():
        raise UserError(
            f"unknown model {name!r}; `ppl-vae models` lists the suite ({', '.join(names())}), "
            "or pass a path to a .py file that defines MODEL"
        )
    module = importlib.import_module(f"models.{name.replace('-', '_')}")
    return _model_class(module, f"models/{name.replace('-', '_')}.py")


def accepted(cls: type[Autoencoder]) -> set[str]:
    """The keyword arguments a model class's constructor takes (besides ``x_dim``)."""
    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in ("self", "x_dim")}


def build(name: str, x_dim: int, **kwargs: Any) -> Autoencoder:
    """Instantiate a model; unknown keyword arguments are a :class:`UserError`."""
    cls = resolve(name)
    unknown = set(kwargs) - accepted(cls)
    if unknown:
        raise UserError(
            f"model {name} does not take {', '.join(sorted(unknown))}; it takes "
            f"{', '.join(sorted(accepted(cls))) or 'no options'}"
        )
    return cls(x_dim=x_dim, **kwargs)
