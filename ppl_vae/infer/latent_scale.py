"""``poutine.scale`` restricted to named sites: how the trainer applies beta to any program.

The beta-VAE objective (Higgins et al. 2017) weights the KL term,

.. math::

    \\mathcal{L}_\\beta(x) = \\mathbb{E}_q[\\log p(x \\mid z)]
        - \\beta\\, \\mathbb{E}_q[\\log q(z \\mid x) - \\log p(z)],

so the latent sites must be scaled by :math:`\\beta` in *both* programs (the prior's
:math:`\\log p(z)` in the model and :math:`\\log q(z|x)` in the guide) and the observed
sites not at all. Pyro's ``ScaleMessenger`` scales every site it sees; this one passes
the sites it is not given through untouched. The latent sites are the guide's sample sites
*of each trace*, whatever their names (a sequence program samples ``z_1..z_T`` with ``T``
varying per batch): :func:`scale_latents` scales every unobserved sample site the guide
draws and, in the model, the sites the guide drew (besides any named ones); the guide
runs first in every ELBO, so the model sees this trace's names. ``poutine.scale`` refuses
a scale of 0, and so does this (a schedule that starts at 0 must start at a small positive value).

Example::

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro import poutine
    >>> def model():
    ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...     pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.5))
    >>> tr = poutine.trace(LatentScaleMessenger(4.0, ["z"])(model)).get_trace()
    >>> tr.nodes["z"]["scale"], tr.nodes["x"]["scale"]
    (4.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.util import site_is_subsample


class LatentScaleMessenger(ScaleMessenger):
    """Multiply the log-density of the sample sites named in ``sites`` by ``scale``.

    Sites named in ``drawn`` (a set the guide's :class:`GuideScaleMessenger` fills as it
    runs) are scaled too."""

    def __init__(self, scale: float, sites: Iterable[str], drawn: set[str] | None = None):
        super().__init__(scale)
        self.sites = frozenset(sites)
        self.drawn = drawn if drawn is not None else set()

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and (msg["name"] in self.sites or msg["name"] in self.drawn):
            super()._process_message(msg)


class GuideScaleMessenger(ScaleMessenger):
    """Scale every latent site a guide samples (unobserved, not a plate's subsample),
    recording its name in ``drawn``."""

    def __init__(self, scale: float, drawn: set[str]):
        super().__init__(scale)
        self.drawn = drawn

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            self.drawn.add(msg["name"])
            super()._process_message(msg)


def scale_latents(
    scale: float, model: Callable, guide: Callable, sites: Iterable[str] = ()
) -> tuple[Callable, Callable]:
    """``(model, guide)`` with the guide's sample sites of each trace scaled by ``scale``
    in both programs (and ``sites`` as well, wherever they appear)."""
    drawn: set[str] = set(sites)
    return (
        LatentScaleMessenger(scale, sites, drawn)(model),
        GuideScaleMessenger(scale, drawn)(guide),
    )
