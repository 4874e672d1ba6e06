"""ProdLDA of Pyro's tutorial (tutorial/source/prodlda.ipynb).

Copied from Pyro (https://github.com/pyro-ppl/pyro), commit ff6ae1c95
(ff6ae1c9572591791aae8842bcd702fcf0b46fd6), file tutorial/source/prodlda.ipynb (cells 15, 16).
Pyro is Copyright Contributors to the Pyro project / Uber Technologies, Inc.,
licensed under the Apache License 2.0 (SPDX-License-Identifier: Apache-2.0).

The model and guide code below is Pyro's, unchanged. Encoder, Decoder and ProdLDA (cell 16) verbatim: Multinomial counts, BatchNorm,
dropout. The notebook trains with TraceMeanField_ELBO, said here with
``train_defaults = {'elbo': 'meanfield'}`` on a subclass. Added: imports (cell
15's torch ones, without tqdm) and the ``MODEL`` factory (notebook: num_topics 20,
hidden 100, dropout 0.2). Data: make_data.py writes prodlda.npz (counts).
Conformance program for ppl-vae (issue 22): not part of the engine.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import pyro
import pyro.distributions as dist


class Encoder(nn.Module):
    # Base class for the encoder net, used in the guide
    def __init__(self, vocab_size, num_topics, hidden, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)  # to avoid component collapse
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fcmu = nn.Linear(hidden, num_topics)
        self.fclv = nn.Linear(hidden, num_topics)
        # NB: here we set `affine=False` to reduce the number of learning parameters
        # See https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm1d.html
        # for the effect of this flag in BatchNorm1d
        self.bnmu = nn.BatchNorm1d(num_topics, affine=False)  # to avoid component collapse
        self.bnlv = nn.BatchNorm1d(num_topics, affine=False)  # to avoid component collapse

    def forward(self, inputs):
        h = F.softplus(self.fc1(inputs))
        h = F.softplus(self.fc2(h))
        h = self.drop(h)
        # μ and Σ are the outputs
        logtheta_loc = self.bnmu(self.fcmu(h))
        logtheta_logvar = self.bnlv(self.fclv(h))
        logtheta_scale = (0.5 * logtheta_logvar).exp()  # Enforces positivity
        return logtheta_loc, logtheta_scale


class Decoder(nn.Module):
    # Base class for the decoder net, used in the model
    def __init__(self, vocab_size, num_topics, dropout):
        super().__init__()
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs):
        inputs = self.drop(inputs)
        # the output is σ(βθ)
        return F.softmax(self.bn(self.beta(inputs)), dim=1)


class ProdLDA(nn.Module):
    def __init__(self, vocab_size, num_topics, hidden, dropout):
        super().__init__()
        self.vocab_size = vocab_size
        self.num_topics = num_topics
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout)
        self.decoder = Decoder(vocab_size, num_topics, dropout)

    def model(self, docs):
        pyro.module("decoder", self.decoder)
        with pyro.plate("documents", docs.shape[0]):
            # Dirichlet prior 𝑝(𝜃|𝛼) is replaced by a logistic-normal distribution
            logtheta_loc = docs.new_zeros((docs.shape[0], self.num_topics))
            logtheta_scale = docs.new_ones((docs.shape[0], self.num_topics))
            logtheta = pyro.sample(
                "logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1))
            theta = F.softmax(logtheta, -1)

            # conditional distribution of 𝑤𝑛 is defined as 
            # 𝑤𝑛|𝛽,𝜃 ~ Categorical(𝜎(𝛽𝜃))
            count_param = self.decoder(theta)
            # Currently, PyTorch Multinomial requires `total_count` to be homogeneous.
            # Because the numbers of words across documents can vary,
            # we will use the maximum count accross documents here.
            # This does not affect the result because Multinomial.log_prob does
            # not require `total_count` to evaluate the log probability.
            total_count = int(docs.sum(-1).max())
            pyro.sample(
                'obs',
                dist.Multinomial(total_count, count_param),
                obs=docs
            )

    def guide(self, docs):
        pyro.module("encoder", self.encoder)
        with pyro.plate("documents", docs.shape[0]):
            # Dirichlet prior 𝑝(𝜃|𝛼) is replaced by a logistic-normal distribution,
            # where μ and Σ are the encoder network outputs
            logtheta_loc, logtheta_scale = self.encoder(docs)
            logtheta = pyro.sample(
                "logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1))

    def beta(self):
        # beta matrix elements are the weights of the FC layer on the decoder
        return self.decoder.beta.weight.cpu().detach().T


# ---- ppl-vae: the only addition
class _ProdLDA(ProdLDA):
    train_defaults = {"elbo": "meanfield"}  # the notebook: SVI(..., loss=TraceMeanField_ELBO())


def MODEL(x_dim, latent_dim=20, hidden=100, dropout=0.2):
    """ProdLDA(vocab_size=x_dim, num_topics=latent_dim, hidden, dropout)."""
    hidden = hidden[0] if isinstance(hidden, (list, tuple)) else hidden
    return _ProdLDA(vocab_size=x_dim, num_topics=latent_dim, hidden=hidden, dropout=dropout)
