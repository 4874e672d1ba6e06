"""A VAE written exactly the way Pyro's VAE tutorial writes it, trained by ppl-vae.

Nothing here knows about ppl-vae: a plain ``nn.Module`` with an ``Encoder`` and a
``Decoder``, whose ``model`` and ``guide`` register their networks with ``pyro.module``
and name their sites ``"latent"`` and ``"obs"`` (https://pyro.ai/examples/vae.html).
The engine finds the parameters by tracing the two programs once, applies beta to the
latent site itself, and reads every metric off the traces.

From the command line (the file has exactly one class with ``model`` and ``guide``, so it
needs no ``MODEL = ...``; ``x_dim`` comes from the data)::

    ppl-vae train examples/tutorial_vae.py --epochs 20 --out runs/tutorial
    ppl-vae evaluate runs/tutorial --iwae-samples 1000
    ppl-vae train examples/tutorial_vae.py --set hidden_dim=256 --latent-dim 4 --beta 4

``--latent-dim`` is not passed here: the constructor calls it ``z_dim`` (use
``--set z_dim=4``). From Python::

    python examples/tutorial_vae.py --epochs 20
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        return self.sigmoid(self.fc21(hidden))


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        hidden = self.softplus(self.fc1(x))
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale


class VAE(nn.Module):
    def __init__(self, x_dim=64, z_dim=2, hidden_dim=128):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim, x_dim)
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)
        self.z_dim = z_dim

    # p(z) p(x|z)
    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x)

    # q(z|x)
    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


def main(argv=None) -> float:
    import argparse

    from ppl_vae import data
    from ppl_vae.infer.config import TrainConfig
    from ppl_vae.infer.trainer import fit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--z-dim", type=int, default=2)
    p.add_argument("--hidden-dim", type=int, default=128)
    args = p.parse_args(argv)

    ds = data.load(args.data)
    cfg = TrainConfig(epochs=args.epochs, progress=False)
    pyro.set_rng_seed(cfg.seed)
    vae = VAE(x_dim=ds.x_dim, z_dim=args.z_dim, hidden_dim=args.hidden_dim)
    result = fit(vae.model, vae.guide, ds, cfg)
    test_elbo = result.last["test_elbo"]
    print(
        f"test ELBO {test_elbo:.3f} nats per example after {args.epochs} epochs "
        f"(rate {result.last['rate']:.3f}, distortion {result.last['distortion']:.3f})"
    )
    return test_elbo


if __name__ == "__main__":
    main()
