"""Named per-example arrays of one split, sliced together: the inputs beside the data view.

A data set of named arrays (an ``.npz`` with ``NAME_train``/``NAME_test`` for any NAME, a
dict of tensors, a ``torch.utils.data.Dataset`` returning tuples or dicts) keeps its data
view ``x`` (the array figures, reconstructions and ``sample`` show, flattened to one row per
example) as ``x_*`` and every array by name in a :class:`Fields` as ``y_*``: the slot that
travels with ``x`` through training and every measurement, sliced by the same indices
(``fields[idx]``), and that :meth:`ppl_vae.programs.Programs.args` binds to the programs'
parameters by name. ``Fields`` slices like a tensor of examples (``len``, ``shape[0]``,
``[idx]``, ``to``), so code that slices ``(x, y)`` together slices every array together.

Example::

    >>> f = Fields({"x": torch.zeros(4, 3, 2), "lengths": torch.tensor([3, 1, 2, 3])})
    >>> f[torch.tensor([1, 3])]["lengths"].tolist(), f.shape[0], f.x_shape
    ([1, 3], 4, (3, 2))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from ppl_vae.errors import UserError

#: The most named arrays a data set may hold per split (a hostile file may claim thousands).
MAX_ARRAYS = 64


class Fields(Mapping):
    """Per-example tensors by name, all with the same number of rows; ``x_name`` names the
    data view (whose rows, flattened, are the data set's ``x``) and ``x_shape`` its shape per
    example, so a flattened batch of ``x`` is put back as the programs take it."""

    def __init__(self, arrays: Mapping[str, torch.Tensor], x_name: str = "x"):
        arrays = dict(arrays)
        if not arrays:
            raise UserError("a data set needs at least one named array")
        if len(arrays) > MAX_ARRAYS:
            raise UserError(
                f"a data set of {len(arrays)} named arrays is over the limit of {MAX_ARRAYS}"
            )
        if x_name not in arrays:
            raise UserError(f"the data view {x_name!r} is none of the arrays {', '.join(arrays)}")
        rows = {name: (int(a.shape[0]) if a.ndim else None) for name, a in arrays.items()}
        if any(n is None for n in rows.values()):
            bad = next(name for name, n in rows.items() if n is None)
            raise UserError(f"array {bad!r} is a scalar; every array holds one row per example")
        if len(set(rows.values())) > 1:
            listed = ", ".join(f"{name} {n}" for name, n in rows.items())
            raise UserError(
                f"the named arrays disagree on the number of examples ({listed}); each holds "
                "one row per example of the split"
            )
        self.arrays, self.x_name = arrays, x_name

    __eq__ = object.__eq__  # arrays are not compared by value (Mapping's __eq__ would)
    __hash__ = object.__hash__

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.arrays[key]
        return Fields({name: a[key] for name, a in self.arrays.items()}, self.x_name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return int(self.arrays[self.x_name].shape[0])

    @property
    def shape(self) -> tuple[int]:
        """``(examples,)``: what code slicing ``y`` alongside ``x`` reads."""
        return (len(self),)

    @property
    def ndim(self) -> int:
        return 1

    @property
    def device(self) -> torch.device:
        return self.arrays[self.x_name].device

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The data view's shape per example."""
        return tuple(self.arrays[self.x_name].shape[1:])

    def to(self, device) -> Fields:
        return Fields({n: a.to(device) for n, a in self.arrays.items()}, self.x_name)

    def cpu(self) -> Fields:
        return self.to("cpu")

    def with_view(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The arrays by name with the data view taken from ``x`` (a flattened batch of the
        data set's ``x``, possibly binarised since): its rows put back into the view's shape
        and dtype."""
        view = self.arrays[self.x_name]
        out = dict(self.arrays)
        out[self.x_name] = x.reshape(x.shape[0], *view.shape[1:]).to(view.dtype)
        return out

    def describe(self) -> dict[str, list]:
        """``{name: [shape per example, dtype]}`` for the run's record."""
        return {
            n: [list(a.shape[1:]), str(a.dtype).replace("torch.", "")]
            for n, a in self.arrays.items()
        }

    def __repr__(self) -> str:
        return f"Fields({', '.join(f'{n}{tuple(a.shape)}' for n, a in self.arrays.items())})"
