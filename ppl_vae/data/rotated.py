"""Rotated digits: ``digits-rotated`` and ``mnist-5k-rotated``, each image of both splits
turned by its own random angle, the angles kept (the data of the spatially invariant VAE).

An image :math:`x` on the pixel coordinates :math:`c = (u, v) \\in [-1, 1]^2` (``u`` along a
row, ``v`` down the columns; the corners are :math:`\\pm 1`) becomes

.. math::

    x_\\theta(c) = x\\big(R(\\theta)\\, c\\big), \\qquad
    R(\\theta) = \\begin{pmatrix} \\cos\\theta & -\\sin\\theta \\\\
    \\sin\\theta & \\cos\\theta \\end{pmatrix},

read off by bilinear interpolation (``affine_grid`` / ``grid_sample``, zeros outside the
image), the convention of :func:`ppl_vae.models.ivae.transform_coordinates`: a coordinate
decoder that renders the upright digit at :math:`R(\\theta) c` draws :math:`x_\\theta`. The
angles are uniform on :math:`[-60°, 60°]` (radians, ``angle_train`` / ``angle_test``), drawn
with the fixed seed :data:`SEED` whatever the training seed, so every run of a source sees
the same images.

Example::

    >>> from ppl_vae.data import load
    >>> ds = load("digits-rotated")
    >>> ds.x_train.shape, ds.angle_train.shape, bool(ds.angle_test.abs().max() <= MAX_ANGLE)
    (torch.Size([1437, 64]), torch.Size([1437]), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppl_vae.data.dataset import Dataset

MAX_ANGLE = math.pi / 3  # 60 degrees


SEED = 0


@dataclass(frozen=True)
class RotatedDataset(Dataset):
    """A :class:`~ppl_vae.data.dataset.Dataset` that keeps each image's angle (radians), for
    analysis: the angles follow the splits as loaded (not a validation split cut from them),
    stay on the CPU and are never given to the programs."""

    angle_train: torch.Tensor | None = None
    angle_test: torch.Tensor | None = None


def rotate_images(x: torch.Tensor, angles: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Rows ``x`` ``(N, H*W)`` as :math:`x(R(\\theta_n) c)` (module docstring), rows again."""
    h, w = image_hw
    cos, sin = angles.cos(), angles.sin()
    zero = torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, [x.shape[0], 1, h, w], align_corners=True)
    images = x.reshape(-1, 1, h, w)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(x.shape[0], -1).clamp(0, 1)


def rotated(ds: Dataset, seed: int = SEED) -> RotatedDataset:
    """``ds`` (one channel of images) with every image turned by a uniform random angle."""
    g = torch.Generator().manual_seed(seed)
    parts = {}
    for split in ("train", "test"):
        x = getattr(ds, f"x_{split}")
        angles = (torch.rand(x.shape[0], generator=g, dtype=torch.float64) * 2 - 1) * MAX_ANGLE
        parts[f"angle_{split}"] = angles.float()
        parts[f"x_{split}"] = rotate_images(x, angles.float(), ds.image_hw)
    return RotatedDataset(
        f"{ds.name}-rotated",
        y_train=ds.y_train,
        y_test=ds.y_test,
        image_shape=ds.image_shape,
        **parts,
    )
