"""``poutine.scale`` restricted to named sites: how the trainer applies beta to any program.

The beta-VAE objective (Higgins et al. 2017) weights the KL term,

.. math::

    \\mathcal{L}_\\beta(x) = \\mathbb{E}_q[\\log p(x \\mid z)]
        - \\beta\\, \\mathbb{E}_q[\\log q(z \\mid x) - \\log p(z)],

so the latent sites must be scaled by :math:`\\beta` in *both* programs (the prior's
:math:`\\log p(z)` in the model and :math:`\\log q(z|x)` in the guide) and the observed
sites not at all. Pyro's ``ScaleMessenger`` scales every site it sees; this one passes
the sites it is not given through untouched. ``poutine.scale`` refuses a scale of 0, and
so does this (a schedule that starts at 0 must start at a small positive value).

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

from collections.abc import Iterable

from pyro.poutine.scale_messenger import ScaleMessenger


class LatentScaleMessenger(ScaleMessenger):
    """Multiply the log-density of the sample sites named in ``sites`` by ``scale``."""

    def __init__(self, scale: float, sites: Iterable[str]):
        super().__init__(scale)
        self.sites = frozenset(sites)

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] in self.sites:
            super()._process_message(msg)
