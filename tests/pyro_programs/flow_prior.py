"""The VAE with a normalizing-flow (MAF) prior of Pyro's tutorial vae_flow_prior.ipynb.

Copied from Pyro (https://github.com/pyro-ppl/pyro), commit ff6ae1c95
(ff6ae1c9572591791aae8842bcd702fcf0b46fd6), file tutorial/source/vae_flow_prior.ipynb (cells 1, 6, 8).
Pyro is Copyright Contributors to the Pyro project / Uber Technologies, Inc.,
licensed under the Apache License 2.0 (SPDX-License-Identifier: Apache-2.0).

The model and guide code below is Pyro's, unchanged. GaussianEncoder, BernoulliDecoder (cell 6) and VAE (cell 8, without its last two
lines ``vae = VAE(784, 16).cuda()`` / ``vae``) verbatim; needs zuko (pip install
zuko) and pyro.contrib.zuko. The notebook trains on ``x.round()``: use
``--binarize threshold``. Added: the imports (cell 1's model ones) and ``MODEL``.
Conformance program for ppl-vae (issue 22): not part of the engine.
"""
import pyro
import torch
import torch.nn as nn
import zuko

from pyro.contrib.zuko import ZukoToPyro
from torch import Tensor


class GaussianEncoder(nn.Module):
    def __init__(self, features: int, latent: int):
        super().__init__()

        self.hyper = nn.Sequential(
            nn.Linear(features, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 2 * latent),
        )

    def forward(self, x: Tensor):
        phi = self.hyper(x)
        mu, log_sigma = phi.chunk(2, dim=-1)

        return pyro.distributions.Normal(mu, log_sigma.exp()).to_event(1)


class BernoulliDecoder(nn.Module):
    def __init__(self, features: int, latent: int):
        super().__init__()

        self.hyper = nn.Sequential(
            nn.Linear(latent, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, features),
        )

    def forward(self, z: Tensor):
        phi = self.hyper(z)
        rho = torch.sigmoid(phi)

        return pyro.distributions.Bernoulli(rho).to_event(1)


class VAE(nn.Module):
    def __init__(self, features: int, latent: int = 16):
        super().__init__()

        self.encoder = GaussianEncoder(features, latent)
        self.decoder = BernoulliDecoder(features, latent)

        self.prior = zuko.flows.MAF(
            features=latent,
            transforms=3,
            hidden_features=(256, 256),
        )

    def model(self, x: Tensor):
        pyro.module("prior", self.prior)
        pyro.module("decoder", self.decoder)

        with pyro.plate("batch", len(x)):
            z = pyro.sample("z", ZukoToPyro(self.prior()))
            x = pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x: Tensor):
        pyro.module("encoder", self.encoder)

        with pyro.plate("batch", len(x)):
            z = pyro.sample("z", self.encoder(x))


# ---- ppl-vae: the only addition (the notebook: VAE(784, 16))
def MODEL(x_dim, latent_dim=16):
    """VAE(features=x_dim, latent=latent_dim)."""
    return VAE(x_dim, latent_dim)
