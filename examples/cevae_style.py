"""A VAE written as two separate ``PyroModule`` programs, the way ``pyro.contrib.cevae``
writes its ``Model`` and ``Guide``.

Each program is a ``PyroModule`` whose ``forward`` is the program: ``Model()(x)`` states
:math:`p(z)\\,p(x \\mid z)` and ``Guide()(x)`` states :math:`q(z \\mid x)`. The guide holds
(and so registers) its own encoder network; the model holds the decoder. Neither knows
about the other, nor about ppl-vae: the engine finds the parameters of both by tracing
them once.

A file that builds its pair with a factory names it with ``MODEL = ...``; the factory
returns ``(model, guide)``. From the command line::

    ppl-vae train examples/cevae_style.py --latent-dim 4 --hidden 128 --out runs/cevae-style
    ppl-vae evaluate runs/cevae-style --iwae-samples 1000

From Python::

    python examples/cevae_style.py
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn


class FullyConnected(nn.Sequential):
    """``Linear -> ELU`` layers, as ``pyro.contrib.cevae`` builds its networks."""

    def __init__(self, sizes):
        layers = []
        for in_size, out_size in zip(sizes, sizes[1:]):
            layers += [nn.Linear(in_size, out_size), nn.ELU()]
        super().__init__(*layers[:-1])  # no activation after the last layer


class Model(PyroModule):
    """:math:`z \\sim \\mathcal{N}(0, I)`, :math:`x \\mid z \\sim
    \\mathrm{Bernoulli}(\\sigma(f(z)))`."""

    def __init__(self, x_dim: int, latent_dim: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.x_nn = FullyConnected([latent_dim, hidden, x_dim])

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros(x.shape[0], self.latent_dim)
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            logits = self.x_nn(z)
            return pyro.sample(
                "x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x
            )


class Guide(PyroModule):
    """:math:`q(z \\mid x) = \\mathcal{N}(\\mu(x), \\operatorname{diag}\\sigma(x)^2)`."""

    def __init__(self, x_dim: int, latent_dim: int, hidden: int):
        super().__init__()
        self.z_nn = FullyConnected([x_dim, hidden, 2 * latent_dim])

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.z_nn(x).chunk(2, dim=-1)
            scale = nn.functional.softplus(raw) + 1e-4
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def factory(x_dim: int = 64, latent_dim: int = 2, hidden: int | str = 64):
    """The ``(model, guide)`` pair; ``hidden`` is one layer width (``--hidden 128``)."""
    hidden = int(hidden)
    return Model(x_dim, latent_dim, hidden), Guide(x_dim, latent_dim, hidden)


MODEL = factory


def main(argv=None) -> float:
    import argparse

    from ppl_vae import data
    from ppl_vae.infer.config import TrainConfig
    from ppl_vae.infer.trainer import fit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    args = p.parse_args(argv)

    ds = data.load("digits")
    cfg = TrainConfig(epochs=args.epochs, progress=False)
    pyro.set_rng_seed(cfg.seed)
    model, guide = factory(ds.x_dim, latent_dim=args.latent_dim, hidden=args.hidden)
    result = fit(model, guide, ds, cfg)
    print(f"test ELBO {result.last['test_elbo']:.3f} nats per example")
    params = dict(result.pair.named_parameters())
    print(f"{len(params)} parameter tensors, {sum(p.numel() for p in params.values())} numbers")
    with result.pair.scope(), torch.no_grad():  # run the programs in the pair's own scope
        print("a draw from q(z|x) for the first test image:", guide(ds.x_test[:1]).tolist())
    return result.last["test_elbo"]


if __name__ == "__main__":
    main()
