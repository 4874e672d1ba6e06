"""Importance-weighted estimates of :math:`\\log p(x)` (Burda et al. 2016), from Pyro's traces.

With :math:`K` draws :math:`z_k \\sim q(z|x)` from the guide,

.. math::

    \\log \\hat p_K(x) = \\log \\frac{1}{K} \\sum_{k=1}^K
        \\frac{p(x, z_k)}{q(z_k \\mid x)}, \\qquad
    \\mathbb{E}[\\log \\hat p_1(x)] = \\mathrm{ELBO}(x) \\le
    \\mathbb{E}[\\log \\hat p_K(x)] \\le \\mathbb{E}[\\log \\hat p_{K+1}(x)]
    \\xrightarrow{K \\to \\infty} \\log p(x).

Each log weight :math:`\\log p(x, z_k) - \\log q(z_k|x)` comes from a guide trace and
the model replayed on it (:func:`ppl_vae.evaluate.log_prob_terms` with an outer
``pyro.plate("particles", P, dim=-2)``), never from hand-written densities. Memory stays
bounded for any :math:`K`: examples go in batches, particles in chunks of ``P``, and the
chunks are folded into a running ``logsumexp``. Draws are made chunk by chunk from one
seeded stream, so when every chunk holds a multiple of 16 normal draws the estimate does
not depend on the chunk size at all (torch draws normals in blocks of 16).

Example::

    >>> import torch
    >>> from models.vae import VAE
    >>> ll = iw_log_likelihood(VAE(x_dim=64, latent_dim=2), torch.rand(5, 64), 100)
    >>> ll.shape
    torch.Size([5])
"""

from __future__ import annotations

import math
import time
from typing import Any

import pyro.distributions as dist
import torch
from tqdm.auto import tqdm

from ppl_vae.autoencoder import Autoencoder
from ppl_vae.errors import UserError
from ppl_vae.evaluate import evaluate, log_prob_terms, seeded

#: Particle-example pairs evaluated at once when the chunk size is not given.
MAX_ROWS = 1 << 16
MAX_SAMPLES = 1_000_000


def check_estimable(module: Autoencoder, x: torch.Tensor) -> None:
    """Refuse models whose importance weights do not estimate :math:`p(x)`: those without
    a latent prior or with a point-mass (``Delta``) guide."""
    if not module.has_prior:
        raise UserError(
            f"{type(module).__name__} has no latent prior, so log p(x) is undefined; "
            "importance-weighted evaluation needs a model with a prior such as vae or ppca"
        )
    q = module.posterior(module.guide_input(x[:1]))
    while hasattr(q, "base_dist"):
        q = q.base_dist
    if isinstance(q, dist.Delta):
        raise UserError(
            f"{type(module).__name__} has a point-mass (Delta) guide, whose importance "
            "weights do not estimate log p(x); use a model with a stochastic guide"
        )


def log_weights(module: Autoencoder, x: torch.Tensor, particles: int) -> torch.Tensor:
    """:math:`\\log p(x, z_k) - \\log q(z_k|x)` for ``particles`` guide draws per example:
    shape ``(particles, B)``."""
    terms = log_prob_terms(module, x, particles=particles)
    return terms["log_lik"] + terms["log_prior"] - terms["log_q"]


def default_chunk(num_samples: int, batch: int) -> int:
    return max(1, min(num_samples, MAX_ROWS // max(batch, 1)))


@torch.no_grad()
def iw_log_likelihood(
    module: Autoencoder,
    x: torch.Tensor,
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
    if x.ndim != 2 or x.shape[0] == 0:
        raise UserError(f"expected a non-empty (N, D) data tensor, got shape {tuple(x.shape)}")
    check_estimable(module, x)
    chunk = chunk_size or default_chunk(num_samples, min(batch_size, x.shape[0]))
    sizes = [min(chunk, num_samples - k) for k in range(0, num_samples, chunk)]
    batches = x.split(batch_size)
    bar = tqdm(
        total=len(batches) * len(sizes),
        desc=f"IW K={num_samples}",
        unit="chunk",
        disable=not progress,
        leave=False,
    )
    was_training = module.training
    module.eval()
    out = []
    try:
        with seeded(seed, x.device):
            for xb in batches:
                acc = torch.full(xb.shape[:1], -math.inf, dtype=xb.dtype, device=xb.device)
                for p in sizes:
                    acc = torch.logaddexp(acc, log_weights(module, xb, p).logsumexp(0))
                    bar.update()
                out.append(acc - math.log(num_samples))
    finally:
        module.train(was_training)
        bar.close()
    return torch.cat(out)


def evaluation(
    module: Autoencoder,
    x: torch.Tensor,
    num_samples: int = 1000,
    split: str = "test",
    seed: int = 0,
    chunk_size: int | None = None,
    batch_size: int = 100,
    progress: bool = False,
) -> dict[str, Any]:
    """The record of ``ppl-vae evaluate``: ``<split>_elbo``, ``<split>_log_likelihood``
    (mean IW estimate, nats), ``rate``, ``distortion``, ``active_units``, ``kl_per_dim``,
    ``recon_mse`` (all on ``split``), ``iwae_samples``, ``split``, ``seconds``.

    ``<split>_log_likelihood`` is ``None`` for models it does not apply to (no prior,
    point-mass guide), with the reason in ``log_likelihood_note``."""
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(
            f"--iwae-samples must lie in 1..{MAX_SAMPLES}, got {num_samples}; K=1 gives the ELBO"
        )
    start = time.perf_counter()
    base = evaluate(module, x, seed=seed)
    record: dict[str, Any] = {f"{split}_elbo": base["elbo"], f"{split}_log_likelihood": None}
    try:
        check_estimable(module, x)
    except UserError as exc:
        record["log_likelihood_note"] = str(exc)
    else:
        ll = iw_log_likelihood(module, x, num_samples, chunk_size, batch_size, seed, progress)
        record[f"{split}_log_likelihood"] = float(ll.mean())
        se = float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else None
        record[f"{split}_log_likelihood_se"] = se
    record.update({k: base[k] for k in ("rate", "distortion", "active_units", "kl_per_dim")})
    record.update(recon_mse=base["recon_mse"], iwae_samples=num_samples, split=split)
    record.update(examples=int(x.shape[0]), seed=seed, seconds=time.perf_counter() - start)
    return record
