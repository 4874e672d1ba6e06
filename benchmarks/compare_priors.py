"""Richer priors, a flow guide and the IWAE objective against the plain VAE, on digits.

Every model has the same encoder/decoder (64-128-8 MLP, Bernoulli pixels) and the same
budget (``--epochs`` of Adam at batch 128); each is scored by the importance-weighted test
:math:`\\log \\hat p_K(x)` with :math:`K = 1000` (``ppl_vae.measure.importance``), mean per example
in nats, higher is better. Until the generic trainer reads ``--objective iwae``, this script
trains each pair with ``elbo.differentiable_loss`` and one torch optimizer.

Run: ``PYTHONPATH=. python benchmarks/compare_priors.py --epochs 100 --seeds 0,1``
"""

from __future__ import annotations

import argparse
import time

import pyro
import torch
from ppl_vae.models.iaf_vae import IAFVAE
from ppl_vae.models.mog_vae import MoGVAE
from ppl_vae.models.vae import VAE
from ppl_vae.models.vamp_vae import VampVAE

from ppl_vae import data
from ppl_vae.infer.iwae import IWAE_ELBO
from ppl_vae.measure.importance import iw_log_likelihood

SIZES = {"latent_dim": 8, "hidden": (128,)}
MODELS = {
    "vae": (lambda d: VAE(d, **SIZES), lambda: pyro.infer.Trace_ELBO(max_plate_nesting=1)),
    "vamp_vae": (lambda d: VampVAE(d, num_pseudo=50, **SIZES), None),
    "mog_vae": (lambda d: MoGVAE(d, components=10, **SIZES), None),
    "iaf_vae": (lambda d: IAFVAE(d, flows=2, flow_hidden=64, **SIZES), None),
    "vae+iwae(k=10)": (lambda d: VAE(d, **SIZES), lambda: IWAE_ELBO(num_particles=10)),
}


def train(module, elbo, x, epochs, batch=128, lr=1e-3, seed=0):
    pyro.set_rng_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            loss = elbo.differentiable_loss(module.model, module.guide, x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--iw-samples", type=int, default=1000)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    ds = data.load("digits")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'model':16s} {'seed':>4s} {'test IW log p(x)':>17s} {'seconds':>8s}")
    results: dict[str, list[float]] = {}
    for name in args.models.split(","):
        make, elbo_of = MODELS[name]
        elbo_of = elbo_of or MODELS["vae"][1]
        for seed in seeds:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            module = train(make(ds.x_dim), elbo_of(), ds.x_train, args.epochs, seed=seed)
            ll = float(iw_log_likelihood(module, ds.x_test, args.iw_samples, seed=seed).mean())
            results.setdefault(name, []).append(ll)
            print(f"{name:16s} {seed:4d} {ll:17.2f} {time.perf_counter() - t0:8.1f}", flush=True)
    print("\nmean over seeds (difference to vae):")
    base = sum(results["vae"]) / len(results["vae"]) if "vae" in results else None
    for name, lls in results.items():
        mean = sum(lls) / len(lls)
        diff = f"{mean - base:+.2f}" if base is not None else ""
        print(f"{name:16s} {mean:8.2f} {diff}")


if __name__ == "__main__":
    main()
