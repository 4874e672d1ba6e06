"""Where the encoder puts the data: a scatter of posterior means coloured by label.

For a 2-D latent the means are drawn as they are; for ``d > 2`` they are shown in the two
dimensions with the largest KL (the ones that carry information) when ``kl_per_dim`` is
given, else in their first two principal components. A 1-D latent is drawn against the label.

Example::

    >>> import tempfile, torch
    >>> path = latent_scatter(torch.randn(100, 2), tempfile.mktemp(suffix=".png"),
    ...                       labels=torch.arange(100) % 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ppl_vae.figures.canvas import DPI, new_figure, save_figure, tight_layout

if TYPE_CHECKING:
    import torch

SCATTER_SIZE = (7.0, 6.0)  # inches: 700 x 600 pixels at DPI


MAX_LEGEND = 20  # more distinct labels than this get a colour bar instead of a legend


def as_numpy(a: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A tensor, array or list as a NumPy array of the same dtype (torch is not imported
    here: the figure worker draws without it)."""
    if hasattr(a, "detach"):  # a torch.Tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


def top_kl_dims(kl_per_dim: Sequence[float] | None, k: int = 2) -> list[int] | None:
    """Indices of the ``k`` dimensions with the largest KL, largest first (None without KL)."""
    if kl_per_dim is None or len(kl_per_dim) < k:
        return None
    return [int(i) for i in np.argsort(-np.asarray(kl_per_dim, dtype=float), kind="stable")[:k]]


def project_2d(
    codes: torch.Tensor | np.ndarray, kl_per_dim: Sequence[float] | None = None
) -> tuple[np.ndarray, tuple[str, str]]:
    """Codes ``(N, d)`` to ``(N, 2)`` points and the two axis labels (see module doc)."""
    z = as_numpy(codes).astype(float).reshape(len(codes), -1)
    d = z.shape[1]
    if d == 1:
        return np.stack([z[:, 0], np.zeros(len(z))], 1), ("z[0]", "")
    if d == 2:
        return z, ("z[0]", "z[1]")
    dims = top_kl_dims(kl_per_dim)
    if dims is not None:
        return z[:, dims], (f"z[{dims[0]}] (largest KL)", f"z[{dims[1]}] (second largest KL)")
    centred = z - z.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-12)
    return centred @ vt[:2].T, (f"PC 1 ({share[0]:.0%})", f"PC 2 ({share[1]:.0%})")


def latent_scatter(
    codes: torch.Tensor | np.ndarray,
    path: str | Path,
    labels: torch.Tensor | np.ndarray | None = None,
    kl_per_dim: Sequence[float] | None = None,
    title: str = "posterior means of the test set",
    figsize=SCATTER_SIZE,
    dpi: int = DPI,
) -> Path:
    """Save :func:`scatter_figure` of the codes as a PNG at ``path``."""
    return save_figure(scatter_figure(codes, labels, kl_per_dim, title, figsize, dpi), path)


def scatter_figure(
    codes: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
    kl_per_dim: Sequence[float] | None = None,
    title: str = "posterior means of the test set",
    figsize=SCATTER_SIZE,
    dpi: int = DPI,
) -> Figure:
    """Scatter of codes (posterior means), one colour per label when labels are given."""
    codes = as_numpy(codes).reshape(len(codes), -1)
    xy, (xlabel, ylabel) = project_2d(codes, kl_per_dim)
    y = None if labels is None else as_numpy(labels).reshape(-1)
    if codes.shape[1] == 1 and y is not None:
        xy[:, 1], ylabel = y, "label"  # a 1-D latent: the code against the label
    fig = new_figure(figsize, dpi)
    ax = fig.subplots()
    size = 12 if len(xy) <= 2000 else 4
    if y is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.7)
    elif len(np.unique(y)) <= MAX_LEGEND:
        cmap = matplotlib.colormaps["tab10" if len(np.unique(y)) <= 10 else "tab20"]
        for i, value in enumerate(np.unique(y)):
            m = y == value
            ax.scatter(xy[m, 0], xy[m, 1], s=size, alpha=0.75, color=cmap(i), label=str(value))
        ax.legend(title="label", fontsize=8, markerscale=1.5, loc="best")
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=y, s=size, alpha=0.75, cmap="viridis")
        fig.colorbar(points, ax=ax, label="label")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    tight_layout(fig)
    return fig
