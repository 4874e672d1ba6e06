"""The suite's VAE and beta-VAE against pythae's on one setting, scored by one evaluator.

Setting (issue 32): mnist-5k (4000 train / 1000 test rows), dynamically binarised -- each
side draws fresh binary training images every epoch, and both are scored on the suite's
one fixed binary draw of the test set (``test_binarize_seed``); a 784-400-16 MLP encoder
(a Gaussian head) and 16-400-784 decoder, Bernoulli pixels, Adam at 1e-3, batches of 100,
50 epochs. The suite trains ``ppl-vae train vae [--beta 4]`` with nothing else changed
(its default ``--elbo auto``: the closed-form KL); pythae 0.1.2 trains ``VAE`` and
``BetaVAE(beta=4)`` (``reconstruction_loss="bce"``, its closed-form KL) with its own
``BaseTrainer``. Both trained pairs are then scored by the *same* evaluator, the suite's
importance-weighted estimate of log p(x) with K = 1000 samples
(:func:`ppl_vae.measure.importance.iw_log_likelihood`): pythae's trained networks are
loaded into a Pyro program pair (p(z) = N(0, I), Bernoulli logits, q = N(mu, exp(log_var))).
The difference is reported with its paired standard error over the 1000 test digits.

pythae is never a dependency of ppl-vae: it runs in a virtual environment of its own
(``--pythae-python``), this script calling itself there with ``--pythae-side``; the two
sides exchange data and weights as ``.npz`` and safetensors files.

Run (about 10 minutes per seed on two CPU cores)::

    .venv/bin/python benchmarks/vs_pythae.py --pythae-python /work/wt/pythae-venv/bin/python \\
        --seeds 0,1 --out /tmp/vs_pythae
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

LATENT, HIDDEN, BATCH, LR = 16, 400, 100, 1e-3


class Encoder(nn.Module):
    """784-400-16: mu and log_var heads (pythae's convention)."""

    def __init__(self, x_dim: int = 784):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(x_dim, HIDDEN), nn.ReLU())
        self.mu, self.log_var = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.reshape(x.shape[0], -1))
        return self.mu(h), self.log_var(h)


class Decoder(nn.Module):
    """16-400-784 Bernoulli logits."""

    def __init__(self, x_dim: int = 784):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, x_dim))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


# -- the pythae side (runs in pythae's own environment) ----------------------------------


def pythae_side(args: argparse.Namespace) -> None:
    from pythae.data.datasets import DatasetOutput
    from pythae.models import VAE, BetaVAE, BetaVAEConfig, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from safetensors.torch import save_file

    class PEncoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.net = Encoder()

        def forward(self, x):
            mu, log_var = self.net.params(x)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class PDecoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.net = Decoder()

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net.logits(z)))

    class Dynamic(torch.utils.data.Dataset):
        """Grey images, one fresh Bernoulli draw each time a row is read (each epoch)."""

        def __init__(self, x: torch.Tensor, seed: int):
            self.x, self.g = x, torch.Generator().manual_seed(seed)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            row = self.x[i]
            return DatasetOutput(data=(torch.rand(row.shape, generator=self.g) < row).float())

    torch.manual_seed(args.seed)
    x_train = torch.from_numpy(np.load(args.data)["x_train"]).float()
    if args.beta == 1.0:
        model = VAE(
            VAEConfig(input_dim=(784,), latent_dim=LATENT, reconstruction_loss="bce"),
            encoder=PEncoder(),
            decoder=PDecoder(),
        )
    else:
        config = BetaVAEConfig(
            input_dim=(784,), latent_dim=LATENT, reconstruction_loss="bce", beta=args.beta
        )
        model = BetaVAE(config, encoder=PEncoder(), decoder=PDecoder())
    config = BaseTrainerConfig(
        output_dir=str(Path(args.out).parent / f"pythae-{Path(args.out).stem}"),
        learning_rate=LR,
        per_device_train_batch_size=BATCH,
        num_epochs=args.epochs,
        optimizer_cls="Adam",
        seed=args.seed,
        no_cuda=True,
    )
    trainer = BaseTrainer(model, Dynamic(x_train, args.seed), training_config=config)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    state = {f"encoder.{k}": v for k, v in model.encoder.net.state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in model.decoder.net.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"seconds": seconds}))


# -- the suite side and the evaluator (ppl-vae's environment) ----------------------------


class PythaePair(nn.Module):
    """pythae's trained networks as a Pyro program pair (the evaluator's input)."""

    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = Encoder(), Decoder()

    def model(self, x):
        import pyro
        import pyro.distributions as dist

        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], LATENT), 1.0).to_event(1))
            logits = self.decoder.logits(z)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        import pyro
        import pyro.distributions as dist

        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            mu, log_var = self.encoder.params(x)
            pyro.sample("z", dist.Normal(mu, (0.5 * log_var).exp()).to_event(1))


def suite_run(beta: float, seed: int, epochs: int, elbo: str = "auto"):
    from ppl_vae.infer.config import TrainConfig
    from ppl_vae.runs.config import RunConfig
    from ppl_vae.runs.train import train_run

    cfg = RunConfig(
        model="vae",
        model_args={"latent_dim": LATENT, "hidden": [HIDDEN]},
        data="mnist-5k",
        binarize="dynamic",
        train=TrainConfig(
            epochs=epochs, batch_size=BATCH, lr=LR, seed=seed, beta=beta, progress=False, elbo=elbo
        ),
    )
    run = train_run(cfg)
    return run.pair, run.metrics


def log_px(pair, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    from ppl_vae.measure.importance import iw_log_likelihood

    with torch.no_grad():
        return iw_log_likelihood(pair, x, None, k, seed=seed).double()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pythae-python", default="/work/wt/pythae-venv/bin/python")
    p.add_argument("--seeds", default="0")
    p.add_argument("--betas", default="1,4")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iwae-samples", type=int, default=1000)
    p.add_argument("--out", default="/tmp/vs_pythae")
    p.add_argument(
        "--suite-elbo", default="auto", help="the suite's --elbo (default: its default, auto)"
    )
    p.add_argument(
        "--reuse", action="store_true", help="score pythae weights already in --out again"
    )
    p.add_argument("--pythae-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--beta", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pythae_side:
        pythae_side(args)
        return 0

    from safetensors.torch import load_file

    from ppl_vae import data
    from ppl_vae.programs import from_object

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = data.load("mnist-5k", binarize="dynamic")  # the fixed test draw, grey training rows
    npz = out / "mnist5k.npz"
    np.savez(npz, x_train=ds.x_train.numpy(), x_test=ds.x_test.numpy())
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for beta in [float(b) for b in args.betas.split(",")]:
            tag = f"beta{beta:g}-seed{seed}"
            weights = out / f"pythae-{tag}.safetensors"
            cmd = [args.pythae_python, __file__, "--pythae-side", "--data", str(npz)]
            cmd += ["--beta", str(beta), "--seed", str(seed), "--epochs", str(args.epochs)]
            if not (args.reuse and weights.is_file()):
                run = subprocess.run([*cmd, "--out", str(weights)], capture_output=True, text=True)
                if run.returncode:
                    sys.exit(f"the pythae side failed:\n{run.stderr[-3000:]}")
            pythae_seconds = json.loads(weights.with_suffix(".json").read_text())["seconds"]
            theirs = PythaePair()
            state = load_file(weights)
            theirs.encoder.load_state_dict(
                {k[8:]: v for k, v in state.items() if k.startswith("encoder.")}
            )
            theirs.decoder.load_state_dict(
                {k[8:]: v for k, v in state.items() if k.startswith("decoder.")}
            )
            pair_theirs = from_object(theirs, ds.x_test[:2])
            pair_ours, metrics = suite_run(beta, seed, args.epochs, args.suite_elbo)
            ours = log_px(pair_ours, ds.x_test, args.iwae_samples, seed=123)
            them = log_px(pair_theirs, ds.x_test, args.iwae_samples, seed=123)
            n = len(ours)
            diff = ours - them
            row = {
                "model": "VAE" if beta == 1 else f"BetaVAE (beta {beta:g})",
                "beta": beta,
                "seed": seed,
                "suite": float(ours.mean()),
                "suite_se": float(ours.std() / math.sqrt(n)),
                "pythae": float(them.mean()),
                "pythae_se": float(them.std() / math.sqrt(n)),
                "difference": float(diff.mean()),
                "paired_se": float(diff.std() / math.sqrt(n)),
                "suite_elbo": metrics["elbo"],
                "suite_kl": metrics["kl"],
                "suite_seconds": metrics["seconds"],
                "pythae_seconds": pythae_seconds,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = "vs_pythae.json" if args.suite_elbo == "auto" else f"vs_pythae-{args.suite_elbo}.json"
    (out / name).write_text(json.dumps(rows, indent=1))
    print()
    print(f"suite: --elbo {args.suite_elbo}")
    print(
        "| model | seed | suite log p(x) | pythae log p(x) | suite - pythae (paired SE) |"
        " train s suite / pythae |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['seed']} | {r['suite']:.2f} ± {r['suite_se']:.2f} | "
            f"{r['pythae']:.2f} ± {r['pythae_se']:.2f} | {r['difference']:+.2f} "
            f"({r['paired_se']:.2f}) | {r['suite_seconds']:.0f} / {r['pythae_seconds']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
