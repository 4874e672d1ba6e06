"""Importance-weighted estimates of :math:`\\log p(x)` (Burda et al. 2016), from Pyro's traces.

With :math:`K` draws :math:`z_k \\sim q(z|x)` from the guide,

.. math::

    \\log \\hat p_K(x) = \\log \\frac{1}{K} \\sum_{k=1}^K
        \\frac{p(x, z_k)}{q(z_k \\mid x)}, \\qquad
    \\mathbb{E}[\\log \\hat p_1(x)] = \\mathrm{ELBO}(x) \\le
    \\mathbb{E}[\\log \\hat p_K(x)] \\le \\mathbb{E}[\\log \\hat p_{K+1}(x)]
    \\xrightarrow{K \\to \\infty} \\log p(x).

Each log weight :math:`\\log p(x, z_k) - \\log q(z_k|x)` comes from a guide trace and
the model replayed on it (:func:`ppl_vae.traces.terms` with an outer particle plate left
of the programs' own plates; one draw at a time for programs that do not vectorise), never
from hand-written densities. Every latent site counts, so a hierarchical model's estimate
uses all of them. Memory stays
bounded for any :math:`K`: examples go in batches, particles in chunks of ``P``, and the
chunks are folded into a running ``logsumexp``. Draws are made chunk by chunk from one
seeded stream, so when every chunk holds a multiple of 16 normal draws the estimate does
not depend on the chunk size at all (torch draws normals in blocks of 16).

Example::

    >>> import torch
    >>> from ppl_vae.models.vae import VAE
    >>> from ppl_vae.programs import from_object
    >>> x = torch.rand(5, 64)
    >>> ll = iw_log_likelihood(from_object(VAE(x_dim=64, latent_dim=2), x), x, num_samples=100)
    >>> ll.shape
    torch.Size([5])
"""

from __future__ import annotations

import math

import torch

from ppl_vae import ranks, traces
from ppl_vae.errors import UserError
from ppl_vae.measure.metrics import batches, eval_mode, seeded
from ppl_vae.programs import Programs

#: Particle-example pairs evaluated at once when the chunk size is not given.
MAX_ROWS = 1 << 16


MAX_SAMPLES = 1_000_000


def check_estimable(pair: Programs) -> None:
    """Refuse pairs whose importance weights do not estimate :math:`p(x)`: those whose model
    masks out its latent prior, whose guide is a point mass (``Delta``) at every site, or
    with global latent sites (outside the data plate), whose draws every example shares."""
    if not pair.has_prior:
        raise UserError(
            f"{pair.name} has no latent prior, so log p(x) is undefined; "
            "importance-weighted evaluation needs a model with a prior such as vae or ppca"
        )
    if pair.point_mass:
        raise UserError(
            f"{pair.name} has a point-mass (Delta) guide, whose importance "
            "weights do not estimate log p(x); use a model with a stochastic guide"
        )
    if pair.global_sites:
        raise UserError(
            f"{pair.name} has global latent sites ({', '.join(pair.global_sites)}) shared by "
            "every example, so a per-example importance-weighted bound on log p(x) is not "
            "defined; the ELBO, rate and distortion include them"
        )


def log_weights(pair: Programs, args: tuple, particles: int) -> torch.Tensor:
    """:math:`\\log p(x, z_k) - \\log q(z_k|x)` for ``particles`` guide draws per example,
    shape ``(particles, B)``: vectorised in a particle plate where the programs allow it,
    one draw at a time otherwise."""

    def fast() -> torch.Tensor:
        t = traces.terms(pair, args, particles=particles)
        return t["log_lik"] + t["log_prior"] - t["log_q"]

    def slow() -> torch.Tensor:
        draws = []
        for _ in range(particles):
            t = traces.terms(pair, args)
            draws.append(t["log_lik"] + t["log_prior"] - t["log_q"])
        return torch.stack(draws)

    return pair.vectorized("log_weights", fast, slow)


def default_chunk(num_samples: int, batch: int) -> int:
    return max(1, min(num_samples, MAX_ROWS // max(batch, 1)))


@torch.no_grad()
def iw_log_likelihood(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    num_samples: int = 1000,
    chunk_size: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Per-example importance-weighted :math:`\\log \\hat p_K(x)` with ``K = num_samples``,
    shape ``(N,)``; ``chunk_size`` particles of ``batch_size`` examples at a time."""
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(
            f"the number of importance samples must lie in 1..{MAX_SAMPLES}, got {num_samples}"
        )
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise UserError("batch size and chunk size must be at least 1")
    if x.shape[0] == 0:
        raise UserError(f"expected a non-empty data tensor, got shape {tuple(x.shape)}")
    check_estimable(pair)
    chunk = chunk_size or default_chunk(num_samples, min(batch_size, x.shape[0]))
    sizes = [min(chunk, num_samples - k) for k in range(0, num_samples, chunk)]
    n_batches = math.ceil(x.shape[0] / batch_size)
    bar = ranks.progress(
        progress,
        total=n_batches * len(sizes),
        desc=f"IW K={num_samples}",
        unit="chunk",
        leave=False,
    )
    out = {}
    try:
        # Batch k under its own seed: sharded over the ranks of a distributed run (batch k
        # on rank k % W, see ppl_vae.ranks), every example gets the draws it gets in
        # one process, and the estimates are gathered in example order.
        with eval_mode(pair):
            for k, args in ranks.my_batches(batches(x, y, pair, batch_size)):
                xb = args[0]
                acc = torch.full(xb.shape[:1], -math.inf, dtype=xb.dtype, device=xb.device)
                with seeded(ranks.batch_seed(seed, k), x.device):
                    for p in sizes:
                        acc = torch.logaddexp(acc, log_weights(pair, args, p).logsumexp(0))
                        bar.update()
                out[k] = acc - math.log(num_samples)
    finally:
        bar.close()
    out = ranks.gather(out, x.device)
    return torch.cat([out[k] for k in sorted(out)])
