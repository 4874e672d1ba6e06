"""Figures from arrays. Plotting functions take tensors and a path; they never train.

Image grids use torchvision's ``make_grid``/``save_image``; small images (8x8 digits)
are enlarged with nearest-neighbour upsampling so single pixels stay visible.

Example::

    >>> import tempfile, torch
    >>> path = image_grid(torch.rand(16, 64), (8, 8), tempfile.mktemp(suffix=".png"))
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

MIN_SIDE = 28  # images smaller than this are enlarged by an integer factor


def as_images(x: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
    """Rows ``(N, H*W)`` to a clamped ``(N, 1, H', W')`` batch, enlarged when small."""
    h, w = image_shape
    imgs = x.detach().float().cpu().reshape(-1, 1, h, w).clamp(0, 1)
    factor = max(1, -(-MIN_SIDE // max(h, w)))
    if factor > 1:
        imgs = F.interpolate(imgs, scale_factor=factor, mode="nearest")
    return imgs


def image_grid(
    x: torch.Tensor, image_shape: tuple[int, int], path: str | Path, nrow: int = 8
) -> Path:
    """Save rows of ``x`` as one grid image, ``nrow`` images per row, white gutters."""
    path = Path(path)
    save_image(as_images(x, image_shape), path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def reconstructions(
    x: torch.Tensor, x_hat: torch.Tensor, image_shape: tuple[int, int], path: str | Path
) -> Path:
    """Inputs in the first row, their reconstructions in the row below (pairs of rows)."""
    n = x.shape[0]
    nrow = min(n, 16)
    rows = []
    for i in range(0, n, nrow):
        rows += [x[i : i + nrow], x_hat[i : i + nrow]]
    return image_grid(torch.cat(rows), image_shape, path, nrow=nrow)
