"""The one matplotlib canvas every figure draws on: an Agg ``Figure`` of a fixed size and
dpi, laid out once (:func:`tight_layout`, or :func:`fixed_layout` where the panels never
change) and saved with one draw (:func:`save_figure`).

No pyplot: nothing here touches matplotlib's global state or backend, so importing
ppl-vae changes nothing global and figures can be drawn from any thread.

Example::

    >>> fig = new_figure((2.0, 1.0))
    >>> fig.get_size_inches().tolist(), fig.dpi
    ([2.0, 1.0], 100)
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def new_figure(figsize: tuple[float, float], dpi: int = DPI) -> Figure:
    """A matplotlib figure on its own Agg canvas."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def tight_layout(fig: Figure) -> None:
    """Matplotlib's tight layout, done now, leaving no layout engine behind: with one set
    (even the inert placeholder ``Figure.tight_layout`` leaves) ``savefig`` draws the
    figure a second time before drawing it, to lay it out again. The figure looks the
    same; saving it costs one draw instead of two."""
    fig.tight_layout()
    fig.set_layout_engine(None)


def fixed_layout(fig: Figure, **margins: float) -> None:
    """Margins given as fractions of the figure (``left``, ``right``, ``bottom``, ``top``,
    ``wspace``, ``hspace``), for a figure whose size and panels are always the same: no
    measuring pass, where :func:`tight_layout` draws every tick label once to find them
    (about half of the training curves' drawing time)."""
    fig.subplots_adjust(**margins)
    fig.set_layout_engine(None)


def save_figure(fig: Figure, path: str | Path | BinaryIO) -> Path | BinaryIO:
    """Save at the figure's own size and dpi (no tight bounding box: the size is fixed),
    to a path (it may be a temporary name) or a binary file object."""
    path = path if hasattr(path, "write") else Path(path)
    fig.savefig(path, dpi=fig.dpi, format="png")
    return path
