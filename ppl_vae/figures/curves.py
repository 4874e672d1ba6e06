"""Training curves from a run's ``history``: ELBO, rate, distortion, beta, loss per epoch.

Matplotlib draws on an Agg canvas owned by each figure (no pyplot, no global state), and
figures are saved at a fixed size, ``figsize * dpi`` pixels, laid out once with fixed
margins (:func:`~ppl_vae.figures.canvas.fixed_layout`: the six panels never change) so that
saving draws them once.

Example::

    >>> import tempfile
    >>> history = [{"epoch": 1, "beta": 1.0, "train_elbo": -30.0, "test_elbo": -31.0,
    ...             "rate": 4.0, "distortion": 27.0}]
    >>> path = training_curves(history, tempfile.mktemp(suffix=".png"))
    >>> fig = curves_figure(history)  # the Figure itself, to inspect or save elsewhere
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['train', 'test']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ppl_vae.figures.canvas import DPI, fixed_layout, new_figure, save_figure

CURVES_SIZE = (13.0, 7.0)  # inches: 1300 x 700 pixels at DPI


# One panel per quantity: title, then (history key, legend label, line style).
PANELS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "ELBO (nats per example, higher is better)",
        (("train_elbo", "train", "-"), ("test_elbo", "test", "-")),
    ),
    ("rate: KL(q(z|x) || p(z)) (nats)", (("train_rate", "train", "-"), ("rate", "test", "-"))),
    (
        "distortion: -log p(x|z) (nats)",
        (("train_distortion", "train", "-"), ("distortion", "test", "-")),
    ),
    ("beta (weight of the KL term)", (("beta", "beta", "-"),)),
    (
        "training loss (minimised; running mean over minibatches)",
        (("train_objective", "train", "-"),),
    ),
    ("active units (test)", (("active_units", "test", "-"),)),
)


def series(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    """``history[i][key]`` as floats, NaN where missing or None (a model without a prior)."""
    out = []
    for record in history:
        value = record.get(key)
        out.append(float(value) if isinstance(value, int | float) else math.nan)
    return out


def training_curves(
    history: Sequence[dict[str, Any]], path: str | Path, figsize=CURVES_SIZE, dpi: int = DPI
) -> Path:
    """Save :func:`curves_figure` of ``history`` as a PNG at ``path``."""
    return save_figure(curves_figure(history, figsize, dpi), path)


def curves_figure(history: Sequence[dict[str, Any]], figsize=CURVES_SIZE, dpi: int = DPI) -> Figure:
    """Six panels against the epoch: ELBO (at beta = 1), rate, distortion, beta, the
    training loss and the active units, each for train and test where the history has
    them (the trainer writes ``train_rate``/``train_distortion`` beside the test set's
    ``rate``/``distortion`` every epoch). A quantity that is None throughout (the rate of an
    autoencoder without a latent prior) gets a note instead of a line; None in some epochs
    leaves gaps. Each line's label is its legend entry (``train``, ``test``, ``beta``)."""
    fig = new_figure(figsize, dpi)
    axes = fig.subplots(2, 3).ravel()
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    for ax, (title, lines) in zip(axes, PANELS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        drawn = 0
        for key, label, style in lines:
            ys = series(history, key)
            if any(not math.isnan(y) for y in ys):
                ax.plot(epochs, ys, style, marker="o", markersize=2.5, label=label)
                drawn += 1
        if drawn:
            ax.grid(alpha=0.3)
            if drawn > 1:
                ax.legend(fontsize=8)
        else:
            ax.text(
                0.5,
                0.5,
                "not recorded for this model\n(e.g. no latent prior)" if history else "no history",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    # The panels and their titles are always these: margins for them, no measuring pass.
    fixed_layout(fig, left=0.05, right=0.99, bottom=0.07, top=0.96, wspace=0.2, hspace=0.32)
    return fig
