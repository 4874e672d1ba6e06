"""Coordinate decoders (Bepler et al. 2019, spatial-VAE; pyroVED's ``sDecoderNet``): an image
is a function of its pixel coordinates, so rotating and translating the coordinates moves
the image.

The pixel grid :math:`c = (u, v) \\in [-1, 1]^2` (``u`` along a row, ``v`` down the
columns; :func:`coordinate_grid`) is transformed per example,

.. math::

    c' = R(\\varphi)\\, c + t, \\qquad R(\\varphi) = \\begin{pmatrix} \\cos\\varphi &
    -\\sin\\varphi \\\\ \\sin\\varphi & \\cos\\varphi \\end{pmatrix},

and an MLP :math:`g(c', z)` gives each pixel's output from its transformed coordinate and the
content code :math:`z` (:class:`CoordinateDecoder`: :math:`h = \\tanh(A c' + B z)`, tanh
layers, one linear output per pixel). Rendering at :math:`R(\\theta) c` draws the image
turned as :func:`ppl_vae.data.rotated.rotate_images` turns it by :math:`\\theta`.

Example::

    >>> dec = CoordinateDecoder(latent_dim=2, hidden=(16, 16))
    >>> grid = coordinate_grid((8, 8))
    >>> c = transform_coordinates(grid, torch.zeros(3), torch.zeros(3, 2))
    >>> grid.shape, c.shape, dec(c, torch.zeros(3, 2)).shape
    (torch.Size([64, 2]), torch.Size([3, 64, 2]), torch.Size([3, 64]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from ppl_vae.models.blocks.nets import mlp
from torch import nn

from ppl_vae.errors import UserError


def coordinate_grid(image_hw: Sequence[int]) -> torch.Tensor:
    """The ``(H*W, 2)`` coordinates ``(u, v)`` of the pixels of a row-major image."""
    h, w = (int(s) for s in image_hw)
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], -1)


def image_hw(x_dim: int, image_shape: Sequence[int] | None) -> tuple[int, int]:
    """``(H, W)`` of one-channel images: from the data's shape, else a square ``x_dim``."""
    if image_shape is not None and (len(image_shape) == 2 or int(image_shape[0]) == 1):
        return int(image_shape[-2]), int(image_shape[-1])
    side = math.isqrt(int(x_dim))
    if image_shape is None and side * side == int(x_dim):
        return side, side
    raise UserError(
        f"a coordinate decoder draws one-channel images, not rows of {x_dim} values with "
        f"image shape {image_shape}; use image data (--data mnist-5k-rotated) or "
        "--image-shape 1,H,W"
    )


def transform_coordinates(
    grid: torch.Tensor, phi: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """:math:`R(\\varphi) c + t` for every pixel: ``grid`` ``(P, 2)``, ``phi`` ``(...)``,
    ``shift`` ``(..., 2)`` to ``(..., P, 2)``."""
    cos, sin = phi.cos()[..., None], phi.sin()[..., None]
    u, v = grid[:, 0], grid[:, 1]
    rotated = torch.stack([cos * u - sin * v, sin * u + cos * v], -1)
    return rotated + shift[..., None, :]


class CoordinateDecoder(nn.Module):
    """:math:`g(c', z)`: ``(..., P, 2)`` coordinates and ``(..., d)`` codes to ``(..., P *
    out)`` outputs (``out`` per pixel, output-major: all pixels' first output, then the
    second's, as a likelihood with a mean and a scale per pixel reads them)."""

    def __init__(self, latent_dim: int, hidden: Sequence[int] = (128, 128), out: int = 1):
        super().__init__()
        width = int(hidden[0])
        self.coord = nn.Linear(2, width)
        self.latent = nn.Linear(latent_dim, width, bias=False)
        self.body = mlp([width, *hidden, out], activation=nn.Tanh)
        self.out = out

    def forward(self, coords: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.coord(coords) + self.latent(z)[..., None, :])
        y = self.body(h)
        return y.transpose(-1, -2).reshape(*y.shape[:-2], -1)
