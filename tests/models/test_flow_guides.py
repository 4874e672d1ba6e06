"""Every flow guide stays invertible once trained (issue 32): its log q(z|x) is a density,
and its ELBO and log p(x) bounds, only while the flow is a bijection.

Each model in :data:`FLOW_GUIDES` is trained briefly on real data (the digits), then many
posterior draws are pushed through its guide's flow. On every draw the Jacobian of the
whole flow, computed by autograd (an oracle independent of the transforms' own formulas),
has a finite log-determinant of one sign (a determinant that changes sign across draws
crosses zero between them: the map folds, as pythae's planar flows do without the
``w . u >= -1`` condition); the flow's own ``log_abs_det_jacobian`` agrees with it; and
where the transforms have an inverse, ``inverse(forward(z)) = z`` (computed, not read from
the transforms' cache).

A new flow guide appends one :class:`FlowGuide` to the list: a builder taking ``x_dim``, and
whether its transforms have an inverse (Pyro's ``Planar`` and ``Radial`` do not; the suite's
steps in ``models/blocks/flows.py`` add one).
Its guide must sample the latent site ``z`` from a ``TransformedDistribution``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pytest
import torch
from ppl_vae.models.iaf_vae import IAFVAE
from ppl_vae.models.nf_vae import NFVAE
from pyro import poutine
from torch import nn

from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import fit


@dataclass(frozen=True)
class FlowGuide:
    name: str
    build: Callable[[int], nn.Module]
    analytic_inverse: bool = True


FLOW_GUIDES = [
    FlowGuide("iaf-vae", lambda d: IAFVAE(d, latent_dim=4, hidden=(64,), flows=2)),
    FlowGuide("nf-vae-planar", lambda d: NFVAE(d, 4, (64,), flow="planar", flow_length=4)),
    FlowGuide("nf-vae-radial", lambda d: NFVAE(d, 4, (64,), flow="radial", flow_length=4)),
]

DRAWS, POINTS = 200, 100


def flow_of(module: nn.Module, x: torch.Tensor):
    """The base distribution and the transforms of the guide's latent site on ``x``."""
    with torch.no_grad():
        q = poutine.trace(module.guide).get_trace(x).nodes["z"]["fn"]
    while not hasattr(q, "transforms"):  # an Independent or masked wrapper
        q = q.base_dist
    return q.base_dist, list(q.transforms)


def push(transforms, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(z), sum_t log|det J_t|)`` by the transforms' own formulas."""
    log_det = torch.zeros(z.shape[:-1])
    for t in transforms:
        y = t(z)
        log_det = log_det + t.log_abs_det_jacobian(z, y)
        z = y
    return z, log_det


@pytest.fixture(scope="module", params=FLOW_GUIDES, ids=lambda f: f.name)
def trained(request, digits):
    flow = request.param
    pyro.set_rng_seed(0)
    module = flow.build(digits.x_dim)
    config = TrainConfig(epochs=5, batch_size=64, seed=0, progress=False, device="cpu")
    fit(module.model, module.guide, digits, config)
    module.eval()
    return flow, module


def test_the_flow_of_a_trained_guide_is_invertible(trained, digits):
    flow, module = trained
    x = digits.x_test[:POINTS]
    base, transforms = flow_of(module, x)
    torch.manual_seed(1)
    z0 = base.sample((DRAWS,)).requires_grad_(True)  # (S, B, d)
    z, log_det = push(transforms, z0)
    d = z.shape[-1]
    rows = [torch.autograd.grad(z[..., i].sum(), z0, retain_graph=True)[0] for i in range(d)]
    jacobian = torch.stack(rows, -2)  # (S, B, d, d): each draw's flow acts on its row alone
    sign, log_abs = torch.linalg.slogdet(jacobian.double())
    assert torch.isfinite(log_abs).all()
    assert (sign != 0).all() and bool((sign == sign.flatten()[0]).all()), "the map folds"
    assert torch.allclose(log_det.double(), log_abs, atol=1e-3, rtol=1e-4)
    assert float(log_det.detach().std()) > 1e-2  # a trained, non-trivial flow: the test can fail
    if flow.analytic_inverse:
        with torch.no_grad():
            back = z.detach()
            for t in reversed(transforms):
                back = t._inverse(back)  # the formula, not the cache of the forward pass
        assert torch.allclose(back, z0.detach(), atol=1e-4)
