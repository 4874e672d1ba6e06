"""The VAE of Pyro's tutorial (tutorial/source/vae.ipynb), validation off.

Copied from Pyro (https://github.com/pyro-ppl/pyro), commit ff6ae1c95
(ff6ae1c9572591791aae8842bcd702fcf0b46fd6), file tutorial/source/vae.ipynb (cells 9, 11, 17).
Pyro is Copyright Contributors to the Pyro project / Uber Technologies, Inc.,
licensed under the Apache License 2.0 (SPDX-License-Identifier: Apache-2.0).

The model and guide code below is Pyro's, unchanged. Cells 9, 11 and 17 verbatim except ONE token: the notebook writes
``dist.Bernoulli(loc_img)`` after ``pyro.distributions.enable_validation(False)`` (cell 6,
process-global); here the same effect is local: ``dist.Bernoulli(loc_img,
validate_args=False)``, as Pyro's own examples/vae scripts write it. Added: the imports
and the ``MODEL`` factory at the end. See tutorial_vae_validated.py for the literal form.
Conformance program for ppl-vae (issue 22): not part of the engine.
"""

import torch
import torch.nn as nn

import pyro
import pyro.distributions as dist


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        # setup the two linear transformations used
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, 784)
        # setup the non-linearities
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        # define the forward computation on the latent z
        # first compute the hidden units
        hidden = self.softplus(self.fc1(z))
        # return the parameter for the output Bernoulli
        # each is of size batch_size x 784
        loc_img = self.sigmoid(self.fc21(hidden))
        return loc_img

class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        # setup the three linear transformations used
        self.fc1 = nn.Linear(784, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        # setup the non-linearities
        self.softplus = nn.Softplus()

    def forward(self, x):
        # define the forward computation on the image x
        # first shape the mini-batch to have pixels in the rightmost dimension
        x = x.reshape(-1, 784)
        # then compute the hidden units
        hidden = self.softplus(self.fc1(x))
        # then return a mean vector and a (positive) square root covariance
        # each of size batch_size x z_dim
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale

class VAE(nn.Module):
    # by default our latent space is 50-dimensional
    # and we use 400 hidden units
    def __init__(self, z_dim=50, hidden_dim=400, use_cuda=False):
        super().__init__()
        # create the encoder and decoder networks
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)

        if use_cuda:
            # calling cuda() here will put all the parameters of
            # the encoder and decoder networks into gpu memory
            self.cuda()
        self.use_cuda = use_cuda
        self.z_dim = z_dim

    # define the model p(x|z)p(z)
    def model(self, x):
        # register PyTorch module `decoder` with Pyro
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            # setup hyperparameters for prior p(z)
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            # sample from prior (value will be sampled by guide when computing the ELBO)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            # decode the latent code z
            loc_img = self.decoder(z)
            # score against actual images
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x.reshape(-1, 784))

    # define the guide (i.e. variational distribution) q(z|x)
    def guide(self, x):
        # register PyTorch module `encoder` with Pyro
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            # use the encoder to get the parameters used to define q(z|x)
            z_loc, z_scale = self.encoder(x)
            # sample the latent code z
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    # define a helper function for reconstructing images
    def reconstruct_img(self, x):
        # encode image x
        z_loc, z_scale = self.encoder(x)
        # sample in latent space
        z = dist.Normal(z_loc, z_scale).sample()
        # decode the image (note we don't sample in image space)
        loc_img = self.decoder(z)
        return loc_img


# ---- ppl-vae: the only addition (the notebook builds ``VAE()``: z_dim=50, hidden_dim=400)
def MODEL(latent_dim=50, hidden=400):
    """The tutorial's VAE; the Encoder and Decoder are fixed to 784 pixels (28x28 MNIST)."""
    hidden_dim = hidden[0] if isinstance(hidden, (list, tuple)) else hidden
    return VAE(z_dim=latent_dim, hidden_dim=hidden_dim)
