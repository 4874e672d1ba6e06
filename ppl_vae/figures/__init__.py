"""Figures: arrays in, PNG files out; nothing here trains or reads a run directory.

``canvas.py`` is the one matplotlib canvas (no pyplot); ``images.py`` image grids,
reconstructions, manifolds, interpolations and traversals; ``latent.py`` the scatter of
codes; ``curves.py`` training curves from the epoch records; ``disentanglement.py`` the
labelled traversals; ``calibration.py`` the rank histograms of simulation-based
calibration; ``run_figures.py`` a run's figure set (:data:`~ppl_vae.figures.
run_figures.FIGURES`, the one list of their names); ``worker.py`` the second process that
draws a run's two matplotlib figures while the first draws the rest (the page that shows
them, ``report.html``, is the run's: :mod:`ppl_vae.runs.report`). A new figure is a
function taking arrays and a path, added to ``run_figures.py`` and to :data:`FIGURES`.
"""
