"""Analysis of a trained pair's posterior: ArviZ, PSIS and NUTS references.

``posterior.py`` draws from the guide (and the prior) of any program pair, builds ArviZ
``InferenceData``, Pareto-smoothed importance sampling diagnostics per point and the
figures; ``reference.py`` runs ``pyro.infer.NUTS`` on the latent sites with the decoder
fixed, as a reference posterior to compare q(z|x) with. Analysis degrades, never dies: a
reference that cannot start is skipped with a note. A new diagnostic is a function of
``(pair, x, y)`` in one of these files, called from :func:`~ppl_vae.analysis.posterior.analyze`.

``from ppl_vae import analysis; analysis.analyze(...)`` loads ``posterior`` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "posterior": (
        "analyze",
        "inference_data",
        "psis",
        "figures",
        "draw_sites",
        "site_values",
        "choose_points",
        "guide_trace_fn",
        "prior_trace_fn",
    ),
}


def __getattr__(name: str) -> Any:
    for module, names in _EXPORTS.items():
        if name in names:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
