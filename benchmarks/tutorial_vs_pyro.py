"""Issue 22's number: Pyro's tutorial VAE (tests/pyro_programs/tutorial_vae.py) trained by
ppl-vae's fit and by Pyro's own SVI loop (same data, epochs, batch, Adam lr, seed), both scored by
the same evaluator (test ELBO over 4 draws per example, with its standard error).

    python benchmarks/tutorial_vs_pyro.py [EPOCHS]
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from ppl_vae import data
from ppl_vae.infer import TrainConfig, fit
from ppl_vae.measure.metrics import evaluate
from ppl_vae.programs import Programs

ROOT = Path(__file__).resolve().parents[1]
BATCH, LR, SEED, Z, HIDDEN = 100, 1e-3, 0, 10, 400


def tutorial():
    path = ROOT / "tests" / "pyro_programs" / "tutorial_vae.py"
    spec = importlib.util.spec_from_file_location("tutorial_vae", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def score(vae, ds) -> tuple[float, float]:
    pair = Programs(vae.model, vae.guide, (ds.x_train[:2],))
    r = evaluate(pair, ds.x_test, None, 1000, seed=0, draws=4)
    return r["elbo"], r["elbo_stderr"]


def main(epochs: int) -> None:
    tut, ds = tutorial(), data.load("mnist-5k", binarize="threshold", seed=SEED)
    pyro.set_rng_seed(SEED)
    pyro.clear_param_store()
    vae = tut.VAE(z_dim=Z, hidden_dim=HIDDEN)
    t = time.perf_counter()
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR, seed=SEED, progress=False)
    fit(vae.model, vae.guide, ds, cfg)
    seconds = time.perf_counter() - t
    elbo, se = score(vae, ds)
    print(f"ppl-vae fit : test ELBO {elbo:.2f} +- {se:.2f}  ({seconds:.1f} s)")

    pyro.set_rng_seed(SEED)  # Pyro's own loop, as the tutorial writes it
    pyro.clear_param_store()
    vae = tut.VAE(z_dim=Z, hidden_dim=HIDDEN)
    svi = SVI(vae.model, vae.guide, Adam({"lr": LR}), loss=Trace_ELBO())
    g, n = torch.Generator().manual_seed(SEED), ds.x_train.shape[0]
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, BATCH):
            svi.step(ds.x_train[perm[i : i + BATCH]])
    seconds = time.perf_counter() - t
    elbo, se = score(vae, ds)
    print(f"Pyro SVI    : test ELBO {elbo:.2f} +- {se:.2f}  ({seconds:.1f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
