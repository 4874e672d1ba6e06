"""Speed of one training step: the suite's Pyro VAE vs a hand-written PyTorch VAE.

Both run in this process on the same device, data and architecture (784-400-20 MLP,
Bernoulli likelihood, Adam). The hand-written step computes the ELBO in closed form
(analytic KL); the suite's step is ``Trace_ELBO()(model, guide)`` (Monte Carlo KL) and
``TraceMeanField_ELBO`` (analytic KL) over the programs in ``models/vae.py``, exactly as
:func:`ppl_vae.train.fit` calls them. Prints medians over repeats and the ratio.

    python benchmarks/bench_step.py --batch-size 128 --steps 50 --repeats 5 [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import ppl_vae  # noqa: F401  (module-local Pyro params)
from ppl_vae.models.vae import VAE
from ppl_vae.objective import elbo_module
from ppl_vae.train import resolve_device


class HandVAE(nn.Module):
    def __init__(self, x_dim=784, hidden=400, latent=20):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def forward(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        scale = F.softplus(raw) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.dec(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum()
        return rec + kl


def time_steps(loss_fn, params, x, steps: int, device: torch.device) -> float:
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        loss = loss_fn(x) / x.shape[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())  # the trainer reads the loss back each step too

    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, nargs="+", default=[16, 128])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    header = ("batch", "hand ms", "trace ms", "ratio", "meanfield ms", "ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (5, 8, 9, 6, 13, 6))))
    for bs in args.batch_size:
        x = torch.rand(bs, 784, device=device).bernoulli()
        hand = HandVAE().to(device)
        vae = VAE(784, latent_dim=20, hidden=(400,)).to(device)
        runs = {"hand": [], "trace": [], "meanfield": []}
        for _ in range(args.repeats):  # interleaved, so drift hits all three alike
            runs["hand"].append(time_steps(hand, hand.parameters(), x, args.steps, device))
            for kind in ("trace", "meanfield"):
                loss = elbo_module(vae, kind)
                runs[kind].append(time_steps(loss, vae.parameters(), x, args.steps, device))
        med = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
        print(
            f"{bs:>5} {med['hand']:>8.3f} {med['trace']:>9.3f} {med['trace'] / med['hand']:>6.2f} "
            f"{med['meanfield']:>13.3f} {med['meanfield'] / med['hand']:>6.2f}"
        )


if __name__ == "__main__":
    main()
