"""Inputs by name: how a program pair's parameters are filled from a batch's named arrays.

A data set of named arrays (:mod:`ppl_vae.data.fields`) hands every minibatch to the
programs as a dict of arrays sliced with the same indices. :class:`Binder` turns that dict
into the programs' positional arguments, parameter by parameter, in this order:

1. the per-batch **input hook**'s output, where the programs declare one (``batch_inputs``
   on the program or on the module it belongs to, as ``label_form`` is declared): a
   callable whose own parameters are filled the same way (by name from the batch's
   arrays, ``--arg``, its defaults) and which returns a dict of the programs' arguments by
   name, or a tuple of them in the order of the model's parameters (DMM's
   ``get_mini_batch`` turns padded sequences and lengths into a sorted batch, its packed
   reverse, a mask and the lengths);
2. ``--arg PARAM=ARRAY``: the array of that name (a rename);
3. ``--arg PARAM=VALUE``: a constant, a JSON value (an object reads as a dict and by
   attribute, as the ``argparse.Namespace`` Pyro's examples pass: ``args.num_topics``);
4. the array named as the parameter;
5. the parameter's default, which a parameter that nothing fills keeps.

A parameter that nothing fills and that has no default, an ``--arg`` naming no parameter of
the programs or the hook, a hook that raises or returns anything but a tuple or dict of
the programs' arguments: each is one :class:`~ppl_vae.errors.UserError` line.

Example::

    >>> def model(seq, lengths, scale=1.0, *, unused=None): ...
    >>> b = Binder(model, model, Inputs.parse(["lengths=n", "scale=0.5"], ["seq", "n"]))
    >>> b({"seq": torch.zeros(2, 3), "n": torch.tensor([3, 1])})[1:]
    (tensor([3, 1]), 0.5)
    >>> b.bound
    {'seq': 'array seq', 'lengths': 'array n', 'scale': 'constant 0.5'}
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ppl_vae.errors import UserError, first_line

_EMPTY = inspect.Parameter.empty


class Constant(dict):
    """A JSON object passed as a constant: a dict that also reads by attribute."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _constant(value: Any) -> Any:
    if isinstance(value, dict):
        return Constant({k: _constant(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_constant(v) for v in value]
    return value


@dataclass
class Inputs:
    """What fills the programs' parameters besides their names: ``renames`` (parameter ->
    array) and ``constants`` (parameter -> value)."""

    renames: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        specs: Iterable[str] | Mapping[str, Any],
        arrays: Iterable[str],
        text: bool = True,
    ) -> Inputs:
        """``--arg PARAM=SPEC`` options (or a dict ``{PARAM: SPEC}``): SPEC names one of
        ``arrays`` (a rename), or is a JSON value (a constant). With ``text=False`` (values
        from Python) a value that names no array is a constant as it is, strings too."""
        arrays = set(arrays)
        items = specs.items() if isinstance(specs, Mapping) else (_split(s) for s in specs)
        out = cls()
        for param, spec in items:
            if not isinstance(spec, str) or (not text and spec not in arrays):
                out.constants[param] = _constant(spec)
            elif spec in arrays:
                out.renames[param] = spec
            else:
                try:
                    out.constants[param] = _constant(json.loads(spec))
                except ValueError:
                    raise UserError(
                        f"--arg {param}={spec}: {spec!r} names no array of the data "
                        f"({', '.join(sorted(arrays)) or 'none'}) and is not a JSON value "
                        "(quote a string: '\"text\"')"
                    ) from None
        return out

    def __bool__(self) -> bool:
        return bool(self.renames or self.constants)


def array_names(ds) -> list[str]:
    """The names of a data set's per-example arrays: a named data set's own, else ``x``
    (and ``y`` where it has labels)."""
    from ppl_vae.data.fields import Fields

    if isinstance(ds.y_train, Fields):
        return list(ds.y_train)
    return ["x"] + (["y"] if ds.y_train is not None else [])


def inputs_for(
    specs: Mapping[str, Any] | Iterable[str] | None, ds, text: bool = True
) -> Inputs | None:
    """:class:`Inputs` of ``--arg`` options (``text``) or of values from Python against
    data set ``ds``'s arrays; None for none."""
    return Inputs.parse(specs, array_names(ds), text) if specs else None


def _shown(value: Any) -> str:
    """A constant as the run's record shows it: its JSON, or its type for other values."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return f"a {type(value).__name__}"


def _split(spec: str) -> tuple[str, str]:
    param, sep, value = str(spec).partition("=")
    if not sep or not param.isidentifier():
        raise UserError(f"--arg {spec!r} is not PARAM=ARRAY or PARAM=VALUE (a JSON value)")
    return param, value


def parameters(fn: Callable) -> list[inspect.Parameter]:
    """The parameters of a program (a module's ``forward``), or [] where none are known."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        return list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return []


def positional(fn: Callable) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in parameters(fn) if p.kind in kinds]


class Binder:
    """The programs' positional arguments for a batch of named arrays (module docstring).
    ``bound`` says what fed each parameter (``array NAME``, ``constant VALUE``, ``input
    hook``, ``default``), once a batch has been bound."""

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        inputs: Inputs | None = None,
        hook: Callable | None = None,
    ):
        self.inputs, self.hook = inputs or Inputs(), hook
        self.params = positional(model)
        names = [p.name for p in self.params]
        theirs = [p.name for p in positional(guide)]
        takes_any = any(p.kind == p.VAR_POSITIONAL for p in parameters(guide))
        if not takes_any and theirs[: len(names)] != names[: len(theirs)]:
            raise UserError(
                f"the model takes ({', '.join(names)}) but the guide ({', '.join(theirs)}); "
                "inputs are bound by name, so both take the same parameters in the same order"
            )
        self.hook_params = positional(hook) if hook is not None else []
        known = set(names) | {p.name for p in self.hook_params}
        for param in [*self.inputs.renames, *self.inputs.constants]:
            if param not in known:
                where = f"model({', '.join(names)})"
                if hook is not None:
                    where += f" or the input hook({', '.join(p.name for p in self.hook_params)})"
                raise UserError(f"--arg {param}=... names no parameter of {where}")
        self.bound: dict[str, str] = {}

    def _fill(self, params: list[inspect.Parameter], batch: Mapping, given: Mapping, who: str):
        """Values for ``params`` (trailing defaults left out) and what fed each."""
        values, bound = [], {}
        for p in params:
            if p.name in given:
                values.append(given[p.name])
                bound[p.name] = "input hook"
            elif p.name in self.inputs.renames:
                values.append(batch[self.inputs.renames[p.name]])
                bound[p.name] = f"array {self.inputs.renames[p.name]}"
            elif p.name in self.inputs.constants:
                values.append(self.inputs.constants[p.name])
                bound[p.name] = f"constant {_shown(self.inputs.constants[p.name])}"
            elif p.name in batch:
                values.append(batch[p.name])
                bound[p.name] = f"array {p.name}"
            elif p.default is not _EMPTY:
                values.append(p.default)
                bound[p.name] = "default"
            else:
                raise UserError(
                    f"parameter {p.name} of {who} is filled by no array of the data "
                    f"({', '.join(batch) or 'none'}) and has no default; name an array "
                    f"{p.name}, or pass --arg {p.name}=ARRAY or --arg {p.name}=VALUE"
                )
        while values and bound[params[len(values) - 1].name] == "default":
            values.pop()  # a trailing default stays the function's own
        return values, bound

    def _run_hook(self, batch: Mapping) -> dict[str, Any]:
        name = getattr(self.hook, "__name__", "batch_inputs")
        values, fed = self._fill(self.hook_params, batch, {}, f"the input hook {name}")
        self._hook_bound = {f"{name}.{k}": v for k, v in fed.items()}
        rows = next((len(v) for v in batch.values() if torch.is_tensor(v) and v.ndim), 0)
        try:
            out = self.hook(*values)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"the input hook {name} failed on a batch of {rows} examples: "
                f"{type(exc).__name__}: {first_line(exc)}"
            ) from None
        names = [p.name for p in self.params]
        if torch.is_tensor(out):
            out = (out,)
        given = None
        if isinstance(out, tuple | list) and len(out) <= len(names):
            given = dict(zip(names, out))
        elif isinstance(out, Mapping) and all(k in names for k in out):
            given = dict(out)
        if given is not None:
            for key, value in given.items():
                ends = (
                    (value.shape[0], value.shape[-1])
                    if torch.is_tensor(value) and value.ndim
                    else ()
                )
                if ends and rows not in ends:
                    raise UserError(
                        f"the input hook {name} returned {key} of shape {tuple(value.shape)} "
                        f"for a batch of {rows} examples; a tensor it returns holds one entry "
                        "per example along its first or last dimension"
                    )
            return given
        got = f"{len(out)} values" if isinstance(out, tuple | list) else type(out).__name__
        if isinstance(out, Mapping):
            got = f"a dict with {', '.join(k for k in out if k not in names)}"
        raise UserError(
            f"the input hook {name} returned {got}; it must return a tuple of at most "
            f"{len(names)} arguments or a dict naming parameters of model({', '.join(names)})"
        )

    def __call__(self, batch: Mapping[str, Any]) -> tuple:
        given = self._run_hook(batch) if self.hook is not None else {}
        values, bound = self._fill(self.params, batch, given, "the model")
        self.bound = {**bound, **getattr(self, "_hook_bound", {})}
        return tuple(values)
