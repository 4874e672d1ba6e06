"""Latent traversals labelled by the factor each latent captures best.

Row :math:`j` decodes :math:`z^{(j)}(t) = z_0 + t\\,e_j` for each value :math:`t` in
``values`` (by default nine evenly spaced values in [-2.5, 2.5], i.e. a walk of
:math:`\\pm 2.5` prior standard deviations around the base code :math:`z_0`, which
replaces coordinate :math:`j` rather than adding to it). Each row is labelled
``z_j: factor (normalised MI)`` from :func:`ppl_vae.measure.disentanglement.evaluate_all`'s
``latents`` record, and ``inactive`` for latents the FactorVAE score pruned.
``decode`` maps codes ``(n, L)`` to flattened images ``(n, H*W)`` (e.g. the
likelihood's mean); the figure only draws what it is given.

Example::

    >>> import tempfile, torch
    >>> fig = traversal_figure(lambda z: torch.sigmoid(z @ torch.ones(2, 16)), torch.zeros(2),
    ...                        (4, 4), latents=[{"latent": 0, "factor": "posX",
    ...                        "normalized_mi": 0.8, "active": True}])
    >>> len(fig.axes), fig.axes[0].get_ylabel()
    (18, 'z0: posX (0.80)')
    >>> path = save_figure(fig, tempfile.mktemp(suffix=".png"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ppl_vae.errors import UserError
from ppl_vae.figures.canvas import DPI, new_figure, save_figure

__all__ = ["traversal_figure", "row_label", "save_figure"]


def row_label(j: int, latents: Sequence[dict[str, Any]] | None) -> str:
    """``z_j: factor (score)`` from an ``evaluate_all`` latents record, or ``z_j``."""
    entry = next((d for d in latents or () if d.get("latent") == j), None)
    if entry is None:
        return f"z{j}"
    if entry.get("active") is False:
        return f"z{j}: inactive"
    return f"z{j}: {entry['factor']} ({entry['normalized_mi']:.2f})"


def traversal_figure(
    decode: Callable[[torch.Tensor], torch.Tensor],
    base: torch.Tensor,
    image_shape: tuple[int, int],
    latents: Sequence[dict[str, Any]] | None = None,
    values: Sequence[float] | None = None,
    dims: Sequence[int] | None = None,
    cell: float = 0.9,
    dpi: int = DPI,
) -> Figure:
    """One row per latent in ``dims`` (all by default), one column per traversal value."""
    base = torch.as_tensor(base).reshape(-1)
    n_latent = base.numel()
    dims = list(range(n_latent)) if dims is None else [int(d) for d in dims]
    if not dims or min(dims) < 0 or max(dims) >= n_latent:
        raise UserError(f"traversal dims must lie in [0, {n_latent}); got {dims}")
    vals = torch.as_tensor(
        np.linspace(-2.5, 2.5, 9) if values is None else values, dtype=base.dtype
    )
    codes = base.repeat(len(dims), len(vals), 1)  # (rows, cols, L)
    for row, j in enumerate(dims):
        codes[row, :, j] = vals
    with torch.no_grad():
        images = decode(codes.reshape(-1, n_latent)).detach().cpu().float()
    h, w = image_shape
    if images.shape != (len(dims) * len(vals), h * w):
        raise UserError(
            f"decode(z) must return ({len(dims) * len(vals)}, {h * w}) images for "
            f"image_shape {image_shape}; got {tuple(images.shape)}"
        )
    images = images.reshape(len(dims), len(vals), h, w).numpy()
    fig = new_figure((cell * len(vals) + 1.8, cell * len(dims) + 0.4), dpi=dpi)
    axes = fig.subplots(len(dims), len(vals), squeeze=False)
    for row, j in enumerate(dims):
        for col in range(len(vals)):
            ax = axes[row, col]
            ax.imshow(images[row, col], cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == len(dims) - 1:
                ax.set_xlabel(f"{float(vals[col]):+.1f}", fontsize=7)
        axes[row, 0].set_ylabel(row_label(j, latents), rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=1.6 / (cell * len(vals) + 1.8), right=0.99, wspace=0.05, hspace=0.05)
    return fig
