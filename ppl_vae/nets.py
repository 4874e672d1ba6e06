"""Neural building blocks shared by the suite: an MLP and a Gaussian encoder head.

These are plain ``torch.nn`` modules (not Pyro programs): the Pyro programs in
``models/`` hold them and call them, so they can be compiled or swapped freely.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mlp(
    sizes: Sequence[int],
    activation: type[nn.Module] = nn.ReLU,
    final: nn.Module | None = None,
) -> nn.Sequential:
    """``Linear -> activation`` for each hidden layer, a final ``Linear``, then ``final``.

    >>> mlp([64, 32, 2])
    Sequential(
      (0): Linear(in_features=64, out_features=32, bias=True)
      (1): ReLU()
      (2): Linear(in_features=32, out_features=2, bias=True)
    )
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    if final is not None:
        layers.append(final)
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """An MLP returning :math:`(\\mu_\\phi(x), \\sigma_\\phi(x))` with
    :math:`\\sigma = \\mathrm{softplus}(\\cdot) + \\epsilon` so it stays positive."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, min_scale: float = 1e-4):
        super().__init__()
        self.body = mlp([in_dim, *hidden, 2 * out_dim])
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.body(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale


def parse_hidden(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"256"`` or ``"512,256"`` (or ints) to a tuple of layer widths; ``""`` means none."""
    if isinstance(spec, int):
        return (spec,)
    if isinstance(spec, str):
        return tuple(int(s) for s in spec.split(",") if s.strip())
    return tuple(int(s) for s in spec)
