"""The sparse gamma deep exponential family of Pyro's examples/sparse_gamma_def.py.

Copied from Pyro (https://github.com/pyro-ppl/pyro), commit ff6ae1c95
(ff6ae1c9572591791aae8842bcd702fcf0b46fd6), file examples/sparse_gamma_def.py (lines 37-157).
Pyro is Copyright Contributors to the Pyro project / Uber Technologies, Inc.,
licensed under the Apache License 2.0 (SPDX-License-Identifier: Apache-2.0).

The model and guide code below is Pyro's, unchanged: ``rand_tensor`` and ``SparseGammaDEF``
(its hand-written mean-field gamma guide: a non-amortised guide whose per-example
parameters are ``pyro.param`` of shape ``(N, width)``, and global weights ``w_*`` outside
the data plate). Added: the imports these lines use (lines 22-31's, without the data
download and the optimisers) and the ``MODEL`` factory. Pyro's ``main()`` trains it full
batch with ``TraceMeanField_ELBO`` on 320 Olivetti faces of 64x64 Poisson counts.
Conformance program for ppl-vae (issue 28): not part of the engine.
"""
import torch
from torch.nn.functional import softplus

import pyro
from pyro.distributions import Gamma, Poisson


# helper for initializing variational parameters
def rand_tensor(shape, mean, sigma):
    return mean * torch.ones(shape) + sigma * torch.randn(shape)


class SparseGammaDEF:
    def __init__(self):
        # define the sizes of the layers in the deep exponential family
        self.top_width = 100
        self.mid_width = 40
        self.bottom_width = 15
        self.image_size = 64 * 64
        # define hyperparameters that control the prior
        self.alpha_z = torch.tensor(0.1)
        self.beta_z = torch.tensor(0.1)
        self.alpha_w = torch.tensor(0.1)
        self.beta_w = torch.tensor(0.3)
        # define parameters used to initialize variational parameters
        self.alpha_init = 0.5
        self.mean_init = 0.0
        self.sigma_init = 0.1

    # define the model
    def model(self, x):
        x_size = x.size(0)

        # sample the global weights
        with pyro.plate("w_top_plate", self.top_width * self.mid_width):
            w_top = pyro.sample("w_top", Gamma(self.alpha_w, self.beta_w))
        with pyro.plate("w_mid_plate", self.mid_width * self.bottom_width):
            w_mid = pyro.sample("w_mid", Gamma(self.alpha_w, self.beta_w))
        with pyro.plate("w_bottom_plate", self.bottom_width * self.image_size):
            w_bottom = pyro.sample("w_bottom", Gamma(self.alpha_w, self.beta_w))

        # sample the local latent random variables
        # (the plate encodes the fact that the z's for different datapoints are conditionally independent)
        with pyro.plate("data", x_size):
            z_top = pyro.sample(
                "z_top",
                Gamma(self.alpha_z, self.beta_z).expand([self.top_width]).to_event(1),
            )
            # note that we need to use matmul (batch matrix multiplication) as well as appropriate reshaping
            # to make sure our code is fully vectorized
            w_top = (
                w_top.reshape(self.top_width, self.mid_width)
                if w_top.dim() == 1
                else w_top.reshape(-1, self.top_width, self.mid_width)
            )
            mean_mid = torch.matmul(z_top, w_top)
            z_mid = pyro.sample(
                "z_mid", Gamma(self.alpha_z, self.beta_z / mean_mid).to_event(1)
            )

            w_mid = (
                w_mid.reshape(self.mid_width, self.bottom_width)
                if w_mid.dim() == 1
                else w_mid.reshape(-1, self.mid_width, self.bottom_width)
            )
            mean_bottom = torch.matmul(z_mid, w_mid)
            z_bottom = pyro.sample(
                "z_bottom", Gamma(self.alpha_z, self.beta_z / mean_bottom).to_event(1)
            )

            w_bottom = (
                w_bottom.reshape(self.bottom_width, self.image_size)
                if w_bottom.dim() == 1
                else w_bottom.reshape(-1, self.bottom_width, self.image_size)
            )
            mean_obs = torch.matmul(z_bottom, w_bottom)

            # observe the data using a poisson likelihood
            pyro.sample("obs", Poisson(mean_obs).to_event(1), obs=x)

    # define our custom guide a.k.a. variational distribution.
    # (note the guide is mean field gamma)
    def guide(self, x):
        x_size = x.size(0)

        # define a helper function to sample z's for a single layer
        def sample_zs(name, width):
            alpha_z_q = pyro.param(
                "alpha_z_q_%s" % name,
                lambda: rand_tensor((x_size, width), self.alpha_init, self.sigma_init),
            )
            mean_z_q = pyro.param(
                "mean_z_q_%s" % name,
                lambda: rand_tensor((x_size, width), self.mean_init, self.sigma_init),
            )
            alpha_z_q, mean_z_q = softplus(alpha_z_q), softplus(mean_z_q)
            pyro.sample(
                "z_%s" % name, Gamma(alpha_z_q, alpha_z_q / mean_z_q).to_event(1)
            )

        # define a helper function to sample w's for a single layer
        def sample_ws(name, width):
            alpha_w_q = pyro.param(
                "alpha_w_q_%s" % name,
                lambda: rand_tensor((width), self.alpha_init, self.sigma_init),
            )
            mean_w_q = pyro.param(
                "mean_w_q_%s" % name,
                lambda: rand_tensor((width), self.mean_init, self.sigma_init),
            )
            alpha_w_q, mean_w_q = softplus(alpha_w_q), softplus(mean_w_q)
            pyro.sample("w_%s" % name, Gamma(alpha_w_q, alpha_w_q / mean_w_q))

        # sample the global weights
        with pyro.plate("w_top_plate", self.top_width * self.mid_width):
            sample_ws("top", self.top_width * self.mid_width)
        with pyro.plate("w_mid_plate", self.mid_width * self.bottom_width):
            sample_ws("mid", self.mid_width * self.bottom_width)
        with pyro.plate("w_bottom_plate", self.bottom_width * self.image_size):
            sample_ws("bottom", self.bottom_width * self.image_size)

        # sample the local latent random variables
        with pyro.plate("data", x_size):
            sample_zs("top", self.top_width)
            sample_zs("mid", self.mid_width)
            sample_zs("bottom", self.bottom_width)



def MODEL():
    return SparseGammaDEF()
