r"""Generation quality where likelihood cannot compare: the Fréchet distance and improved
precision and recall of generated samples, in the feature space of a classifier.

A point-mass guide has no log p(x), so importance weights cannot compare an autoencoder
with a VAE; their samples can be compared. Both measures take two sets of feature
vectors, ``real`` (a data split) and ``fake`` (the model's generation), one row each; the
features are those of :mod:`ppl_vae.measure.features` (a small classifier trained on the
data set's labels, since no pretrained Inception weights can be downloaded here).

- **Fréchet distance** (Heusel et al. 2017, "GANs trained by a two time-scale update
  rule"): the 2-Wasserstein distance between Gaussians fitted to the two sets,

  .. math::

      \mathrm{FD} = \|\mu_a - \mu_b\|^2
          + \mathrm{Tr}\big(\Sigma_a + \Sigma_b - 2 (\Sigma_a \Sigma_b)^{1/2}\big).

  :math:`\mathrm{Tr}(\Sigma_a\Sigma_b)^{1/2}` is taken by the eigen route: the eigenvalues
  of :math:`\Sigma_a\Sigma_b` are those of the symmetric :math:`\Sigma_a^{1/2}\Sigma_b
  \Sigma_a^{1/2}`, so the trace is the sum of their square roots (``eigh`` in float64,
  round-off below zero clipped), with no non-symmetric ``sqrtm`` and its complex parts.
  0 for identical sets; lower is better. Biased upward at finite N (by about
  :math:`\mathrm{Tr}(\Sigma_a + \Sigma_b)/N` for Gaussians): compare at equal N.
- **Improved precision and recall** (Kynkäänniemi et al. 2019): each set's manifold is the
  union of balls around its points, each of radius the distance to its k-th nearest
  neighbour in the set. Precision is the fraction of ``fake`` inside the real manifold
  (how many samples look real), recall the fraction of ``real`` inside the fake manifold
  (how much of the data the model covers). 1/1 for identical sets, 0/0 for far apart
  ones; dropping modes keeps precision and loses recall.

Each estimate carries a **split-half** standard error (:func:`split_half_se`): the two
sets are cut at random into halves R times, the statistic computed on each pair of
halves, and :math:`\mathrm{se} = \mathrm{rms}(s_1 - s_2) / 2`, which holds for any
statistic whose variance falls as 1/N (the two halves are independent, each with twice
the full sample's variance). Not the bootstrap: duplicated points sit at distance 0 from
each other and would shrink every k-NN radius. Its oracle (the spread over independent
samples) is in ``tests/measure/test_generation.py``, with scipy's ``sqrtm`` for FD.

    >>> a = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    >>> frechet_distance(a, a) < 1e-9, frechet_distance(a, a + 2.0) > 11.9
    (True, True)
    >>> precision_recall(a, a)
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: The neighbour whose distance is a point's radius (Kynkäänniemi et al. use k = 3).
K_NEAREST = 3

#: The random halvings of :func:`split_half_se`.
SPLITS = 10

#: Rows of a distance matrix computed at once (bounds memory for large sets).
CHUNK = 1024


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().to(torch.float64)
    return x.mean(0), torch.atleast_2d(torch.cov(x.T))


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(s)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two ``(N, D)`` sets of features
    (the module docstring's formula; N may differ between the sets)."""
    mu_a, s_a = _moments(feat_a)
    mu_b, s_b = _moments(feat_b)
    root = _psd_sqrt(s_a)
    middle = root @ s_b @ root
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross
    return max(float(fd), 0.0)


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's distance to its k-th nearest other row."""
    out = []
    for start in range(0, x.shape[0], CHUNK):
        d = torch.cdist(x[start : start + CHUNK], x)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # [:, 0] is the row
    return torch.cat(out)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Per point: whether it lies in some ball (centre, radius)."""
    out = []
    for start in range(0, points.shape[0], CHUNK):
        d = torch.cdist(points[start : start + CHUNK], centres)
        out.append((d <= radii).any(dim=1))
    return torch.cat(out)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = K_NEAREST
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against
    ``real`` with k-NN radii; each set needs more than ``k`` rows."""
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision and recall with k={k} need more than {k} rows per set")
    real, fake = real.detach().to(torch.float64), fake.detach().to(torch.float64)
    precision = _covered(fake, real, _kth_radius(real, k)).double().mean()
    recall = _covered(real, fake, _kth_radius(fake, k)).double().mean()
    return float(precision), float(recall)


def split_half_se(
    statistic: Callable[[torch.Tensor, torch.Tensor], tuple[float, ...]],
    a: torch.Tensor,
    b: torch.Tensor,
    splits: int = SPLITS,
    seed: int = 0,
) -> tuple[float, ...]:
    """The split-half standard error of each value ``statistic(a, b)`` returns: ``a`` and
    ``b`` each cut at random into two halves ``splits`` times, and
    :math:`\\mathrm{rms}(s_1 - s_2) / 2` over the cuts (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    squares = None
    for _ in range(splits):
        pa, pb = torch.randperm(a.shape[0], generator=g), torch.randperm(b.shape[0], generator=g)
        ha, hb = a.shape[0] // 2, b.shape[0] // 2
        s1 = statistic(a[pa[:ha]], b[pb[:hb]])
        s2 = statistic(a[pa[ha : 2 * ha]], b[pb[hb : 2 * hb]])
        d2 = [(u - v) ** 2 for u, v in zip(s1, s2, strict=True)]
        squares = d2 if squares is None else [s + d for s, d in zip(squares, d2, strict=True)]
    return tuple(math.sqrt(s / splits) / 2 for s in squares)


def generation_quality(
    real: torch.Tensor,
    fake: torch.Tensor,
    k: int = K_NEAREST,
    splits: int = SPLITS,
    seed: int = 0,
) -> dict[str, float]:
    """``fd``, ``precision`` and ``recall`` of ``fake`` against ``real`` (features, one
    row each), each with its split-half ``_stderr``."""

    def both(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
        return (frechet_distance(x, y), *precision_recall(x, y, k))

    values = both(real, fake)
    ses = split_half_se(both, real, fake, splits, seed)
    out: dict[str, float] = {}
    for name, value, se in zip(("fd", "precision", "recall"), values, ses, strict=True):
        out[name], out[f"{name}_stderr"] = value, se
    return out


def fd_with_se(
    a: torch.Tensor, b: torch.Tensor, splits: int = SPLITS, seed: int = 0
) -> tuple[float, float]:
    """:func:`frechet_distance` and its split-half standard error."""
    (se,) = split_half_se(lambda x, y: (frechet_distance(x, y),), a, b, splits, seed)
    return frechet_distance(a, b), se
