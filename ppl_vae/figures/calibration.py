"""The rank histograms of simulation-based calibration, one panel per latent dimension.

Each panel draws the histogram of :func:`ppl_vae.measure.calibration.calibrate`'s record
(blue where the dimension passed, red where it failed) over the ``level`` band of a bin's
count under uniform ranks (binomial quantiles of each bin's expected share), titled with
the uniformity p-value and the spread (``under``: the guide too narrow, ``over``: too wide).

Example::

    >>> import tempfile
    >>> record = {"simulations": 100, "sites": {"z": [{"histogram": [50, 50],
    ...     "expected": [50.0, 50.0], "p_value": 1.0, "spread": "ok", "passed": True}]}}
    >>> fig = rank_histogram_figure(record)
    >>> len(fig.axes)
    1
    >>> path = save_figure(fig, tempfile.mktemp(suffix=".png"))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from ppl_vae.figures.canvas import new_figure, save_figure, tight_layout

__all__ = ["rank_histogram_figure", "rank_histograms", "save_figure"]


def rank_histogram_figure(result: dict[str, Any], level: float = 0.99) -> Figure:
    """The figure of a calibration record (see the module docstring)."""
    panels = [(s, d, v) for s, dims in result["sites"].items() for d, v in enumerate(dims)]
    cols = max(1, min(4, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = new_figure((3.0 * cols, 2.4 * rows))
    n, tail = result["simulations"], (1 - level) / 2
    for i, (site, d, v) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        p = np.asarray(v["expected"]) / n
        lo, hi = stats.binom.ppf(tail, n, p), stats.binom.ppf(1 - tail, n, p)
        k, edges = np.arange(len(p)), np.arange(len(p) + 1) - 0.5
        ax.bar(k, v["histogram"], width=0.9, color="C0" if v["passed"] else "C3")
        lo, hi = np.append(lo, lo[-1]), np.append(hi, hi[-1])
        ax.fill_between(edges, lo, hi, step="post", color="0.5", alpha=0.3, zorder=3)
        ax.step(edges, lo, "k--", where="post", lw=0.8, label=f"{level:.0%} band")
        ax.step(edges, hi, "k--", where="post", lw=0.8)
        ax.set_title(f"{site}[{d}]  p={v['p_value']:.2g}  {v['spread']}", fontsize=9)
        ax.set_xticks([])
        if i == 0:
            ax.legend(fontsize=7, loc="lower center")
    tight_layout(fig)
    return fig


def rank_histograms(result: dict[str, Any], path: str | Path, level: float = 0.99) -> Path:
    """Draw :func:`rank_histogram_figure` and save it at ``path`` (a caller writing into a
    run passes a staged path: ``RunDir.staged``)."""
    return save_figure(rank_histogram_figure(result, level), path)
