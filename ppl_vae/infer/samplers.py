"""Post-hoc samplers: a density fitted to the codes of a trained model, then decoded.

A deterministic autoencoder has no prior its codes follow, and a VAE's aggregate posterior
:math:`q(z) = \\frac1N \\sum_n q(z \\mid x_n)` is not its prior (the "holes" a prior draw
falls into). Ghosh et al. (2020) fit a density to the training codes after training
("ex-post density estimation"); Dai & Wipf's two-stage VAE and pythae's
``GaussianMixtureSampler`` / ``MAFSampler`` do the same. Two densities are fitted here to
codes ``(N, d)`` (the guide's means, :func:`ppl_vae.traces.codes`):

- ``gmm``: scikit-learn's ``GaussianMixture`` (EM; 10 components, full covariances by
  default), whose parameters -- weights, means, covariances -- become a torch
  ``MixtureSameFamily`` of ``MultivariateNormal``: :math:`\\log p(z) = \\operatorname{lse}_k
  [\\log \\pi_k + \\log \\mathcal{N}(z; \\mu_k, \\Sigma_k)]`, the same number sklearn's
  ``score_samples`` gives;
- ``maf``: a masked autoregressive flow (Papamakarios et al. 2017): ``layers`` of Pyro's
  ``affine_autoregressive`` on the standardised codes, used in the inverse direction so that
  ``log_prob`` is one parallel pass and sampling the sequential one,
  :math:`\\log p(z) = \\log \\mathcal{N}(\\epsilon; 0, I) + \\log|\\det \\partial \\epsilon /
  \\partial z|`, fitted by maximum likelihood with Adam (full batch, at most ``steps``
  steps, stopped early at the best log-likelihood of a tenth of the codes held out).

A :class:`FittedSampler` is plain data -- its ``kind``, JSON ``settings`` and named tensors --
so a run directory stores it as safetensors + JSON and nothing is unpickled; both fits are
deterministic for a given ``seed``.

Example::

    >>> import torch
    >>> codes = torch.randn(500, 2) * torch.tensor([3.0, 0.5])
    >>> s = fit_gmm(codes, components=2)
    >>> s.sample(4).shape, s.log_prob(codes).shape
    (torch.Size([4, 2]), torch.Size([500]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineTransform, affine_autoregressive
from torch import nn

from ppl_vae.errors import UserError

KINDS = ("prior", "gmm", "maf")
COVARIANCES = ("full", "diag", "tied", "spherical")


@dataclass
class FittedSampler:
    """A density over codes: ``kind`` (``gmm`` or ``maf``), its JSON ``settings`` and its
    ``tensors``; :meth:`distribution` rebuilds the torch distribution from them."""

    kind: str
    settings: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    _dist: Any = field(default=None, repr=False, compare=False)

    def distribution(self) -> dist.TorchDistribution:
        if self._dist is None:
            build = {"gmm": _gmm_distribution, "maf": _maf_distribution}[self.kind]
            self._dist = build(self.settings, self.tensors)
        return self._dist

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.distribution().sample([n])

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        t = next(iter(self.tensors.values()))
        return self.distribution().log_prob(z.to(t))


def _codes(codes: torch.Tensor) -> torch.Tensor:
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise UserError(f"a sampler is fitted to codes (N >= 2, d >= 1), got {tuple(codes.shape)}")
    if not torch.isfinite(codes).all():
        raise UserError("the codes hold NaN or inf; the model's encoder diverged")
    return codes.detach().cpu().double()


def fit_gmm(
    codes: torch.Tensor, components: int = 10, covariance: str = "full", seed: int = 0
) -> FittedSampler:
    """A Gaussian mixture fitted to ``codes`` ``(N, d)`` by scikit-learn's EM."""
    from sklearn.mixture import GaussianMixture

    z = _codes(codes)
    if covariance not in COVARIANCES:
        raise UserError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    if not 1 <= components <= z.shape[0]:
        raise UserError(f"components must be in 1..{z.shape[0]} (the codes), got {components}")
    gm = GaussianMixture(components, covariance_type=covariance, random_state=seed).fit(z.numpy())
    settings = {"dim": z.shape[1], "components": components, "covariance": covariance}
    return FittedSampler("gmm", {**settings, "seed": seed}, gmm_tensors(gm))


def gmm_tensors(gm) -> dict[str, torch.Tensor]:
    """A fitted ``GaussianMixture``'s parameters, every covariance type as full matrices."""
    k, d = gm.means_.shape
    cov = torch.as_tensor(gm.covariances_, dtype=torch.float64)
    if gm.covariance_type == "diag":
        cov = torch.diag_embed(cov)
    elif gm.covariance_type == "tied":
        cov = cov.expand(k, d, d)
    elif gm.covariance_type == "spherical":
        cov = cov[:, None, None] * torch.eye(d, dtype=torch.float64)
    return {
        "weights": torch.as_tensor(gm.weights_, dtype=torch.float64),
        "means": torch.as_tensor(gm.means_, dtype=torch.float64),
        "covariances": cov.contiguous(),
    }


def _gmm_distribution(settings: dict[str, Any], t: dict[str, torch.Tensor]):
    w, mu, cov = t["weights"], t["means"], t["covariances"]
    k, d = mu.shape
    if w.shape != (k,) or cov.shape != (k, d, d) or not (w >= 0).all():
        raise UserError(
            "a Gaussian mixture needs weights (K,) >= 0, means (K, d), covariances "
            f"(K, d, d); got {tuple(w.shape)}, {tuple(mu.shape)}, {tuple(cov.shape)}"
        )
    mix = dist.Categorical(probs=w / w.sum(), validate_args=True)
    comp = dist.MultivariateNormal(mu, covariance_matrix=cov, validate_args=True)
    return dist.MixtureSameFamily(mix, comp)


class _Flows(nn.Module):
    """The MAF's parameters: ``layers`` autoregressive networks and the standardisation."""

    def __init__(self, dim: int, layers: int, hidden: int):
        super().__init__()
        self.flows = nn.ModuleList(
            affine_autoregressive(dim, [hidden, hidden]) for _ in range(layers)
        )
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def distribution(self) -> dist.TransformedDistribution:
        base = dist.Normal(torch.zeros_like(self.loc), 1.0).to_event(1)
        inverted = [t.inv for t in reversed(self.flows)]  # MAF: log_prob is the parallel pass
        return dist.TransformedDistribution(
            base, [*inverted, AffineTransform(self.loc, self.scale, event_dim=1)]
        )


def maf_settings(dim: int, layers: int, hidden: int, steps: int, lr: float, seed: int):
    keys = ("dim", "layers", "hidden", "steps", "lr", "seed")
    return dict(zip(keys, (int(dim), int(layers), int(hidden), int(steps), float(lr), int(seed))))


def fit_maf(
    codes: torch.Tensor,
    layers: int = 4,
    hidden: int | None = None,
    steps: int = 500,
    lr: float = 5e-3,
    seed: int = 0,
) -> FittedSampler:
    """A masked autoregressive flow fitted to ``codes`` ``(N, d)`` by maximum likelihood
    (Adam, full batch, at most ``steps`` steps); ``hidden`` defaults to ``max(64, 4 d)`` units
    per layer. A tenth of the codes (at least 10 rows held out) is kept back: the state with
    the best log-likelihood on it is the one returned (early stopping: a flow overfits a few
    thousand codes in 16 dimensions within a few hundred steps)."""
    z = _codes(codes).float()
    hidden = hidden or max(64, 4 * z.shape[1])
    settings = maf_settings(z.shape[1], layers, hidden, steps, lr, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order = torch.randperm(z.shape[0])
        held = max(10, z.shape[0] // 10) if z.shape[0] >= 20 else 0
        fit_on, check_on = z[order[held:]], z[order[:held]] if held else z
        flows = _Flows(z.shape[1], layers, hidden)
        flows.loc.copy_(fit_on.mean(0))
        flows.scale.copy_(fit_on.std(0).clamp_min(1e-6))
        best_step = _train(flows, fit_on, check_on, steps, lr)
    tensors = {k: v.detach().clone() for k, v in flows.state_dict().items()}
    return FittedSampler("maf", {**settings, "best_step": best_step}, tensors)


def _train(flows: _Flows, fit_on: torch.Tensor, check_on: torch.Tensor, steps: int, lr: float):
    """Adam on the mean negative log-likelihood of ``fit_on``; ``flows`` left at the state
    that scored ``check_on`` best (checked every 10 steps); returns that step."""
    opt = torch.optim.Adam(flows.parameters(), lr=lr)
    best, best_step, best_state = -math.inf, 0, None
    for step in range(steps + 1):
        if step % 10 == 0 or step == steps:
            with torch.no_grad():
                score = float(flows.distribution().log_prob(check_on).mean())
            if math.isfinite(score) and score > best:
                best, best_step = score, step
                best_state = {k: v.detach().clone() for k, v in flows.state_dict().items()}
        if step == steps:
            break
        opt.zero_grad()
        (-flows.distribution().log_prob(fit_on).mean()).backward()
        opt.step()
    if best_state is None:
        raise UserError("the flow's fit diverged (no finite log-likelihood); try a smaller lr")
    flows.load_state_dict(best_state)
    return best_step


def _maf_distribution(settings: dict[str, Any], t: dict[str, torch.Tensor]):
    s = settings
    flows = _Flows(int(s["dim"]), int(s["layers"]), int(s["hidden"]))
    try:
        flows.load_state_dict(t)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"the flow's tensors do not fit its settings ({first})") from None
    return flows.requires_grad_(False).distribution()


def from_state(kind: str, settings: dict[str, Any], tensors: dict[str, torch.Tensor]):
    """A saved sampler rebuilt and checked (one :class:`UserError` when it cannot be)."""
    if kind not in ("gmm", "maf"):
        raise UserError(f"unknown sampler kind {kind!r}; one of gmm, maf")
    sampler = FittedSampler(kind, dict(settings), dict(tensors))
    try:
        sampler.distribution()
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"the saved {kind} sampler is invalid ({type(exc).__name__})") from None
    return sampler
